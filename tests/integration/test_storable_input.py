"""Everything the API accepts can be stored (clarion.core.storable).

PostgreSQL refuses a NUL in text and in JSONB, a lone surrogate cannot be encoded, JSONB
refuses NaN: each was a 202 whose create task then failed (with every request of its
batch), or a 500. Now each is a 422 that names the field, on every kind of endpoint.
"""

from __future__ import annotations

import json

import pytest

from tests.broker import drain
from tests.conftest import make_key

NUL, LONE = "\u0000", "\ud800"  # URLs carry a NUL as %00


@pytest.fixture
def admin(runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}


def _send(client, method: str, url: str, headers: dict, body=None):
    """A raw request: the body as ASCII JSON, so a lone surrogate travels as \\ud800."""
    if body is None:
        return client.request(method, url, headers=headers)
    content = json.dumps(body)  # ensure_ascii: escapes NUL and surrogates
    return client.request(
        method, url, content=content, headers={**headers, "Content-Type": "application/json"}
    )


SEND = {"recipients": ["ada"], "category": "news", "title": "Hello"}
PUSH = {
    "endpoint": "https://push.example/abc",
    "keys": {
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A"
        "8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
        "auth": "tBHItJI5svbpez7KI4CCXg",
    },
}

# (who, method, url, body, the loc the 422 must name)
CASES = [
    ("producer", "POST", "/v1/notifications", {**SEND, "title": f"x{NUL}"}, ["body", "title"]),
    ("producer", "POST", "/v1/notifications", {**SEND, "body": f"x{LONE}"}, ["body", "body"]),
    (
        "producer",
        "POST",
        "/v1/notifications",
        {**SEND, "recipients": [f"a{NUL}"]},
        ["body", "recipients"],
    ),
    (
        "producer",
        "POST",
        "/v1/notifications",
        {**SEND, "metadata": {f"k{NUL}": 1}},
        ["body", "metadata"],
    ),
    (
        "producer",
        "POST",
        "/v1/notifications",
        {**SEND, "metadata": {"k": [{"v": LONE}]}},
        ["body", "metadata"],
    ),
    ("producer", "POST", "/v1/notifications", {**SEND, "dedupe_key": NUL}, ["body", "dedupe_key"]),
    ("producer", "POST", "/v1/events", {"type": "a.b", "data": {"x": NUL}}, ["body", "data"]),
    ("producer", "POST", "/v1/events", {"type": "a.b", "subject": LONE}, ["body", "subject"]),
    ("producer", "PUT", "/v1/subscribers/ada%00", {"name": "Ada"}, ["path", "subscriber_id"]),
    ("producer", "PUT", "/v1/subscribers/ada", {"name": f"Ada{NUL}"}, ["body", "name"]),
    ("producer", "PUT", "/v1/subscribers/ada", {"data": {"plan": [LONE]}}, ["body", "data"]),
    ("producer", "PUT", "/v1/topics/news/subscribers", {"add": [f"b{NUL}"]}, ["body", "add"]),
    ("producer", "GET", "/v1/topics/news/subscribers?cursor=a%00", None, ["query", "cursor"]),
    (
        "admin",
        "POST",
        "/v1/templates",
        {"key": "k", "locale": "en", "subject": f"s{NUL}"},
        ["body", "subject"],
    ),
    ("admin", "POST", "/v1/templates/k/preview", {"data": {"a": NUL}}, ["body", "data"]),
    (
        "admin",
        "POST",
        "/v1/webhooks",
        {"url": "https://h.example/", "description": NUL},
        ["body", "description"],
    ),
    ("admin", "PATCH", "/v1/rules/some-rule", {"config": {"x": NUL}}, ["body", "config"]),
    ("admin", "GET", "/v1/dead-letters?error_contains=%00", None, ["query", "error_contains"]),
    ("admin", "GET", "/v1/dead-letters?channel=a%00", None, ["query", "channel"]),
    ("admin", "POST", "/v1/dead-letters/replay", {"channel": NUL}, ["body", "channel"]),
    ("admin", "PUT", "/v1/subscribers/ada/preferences", {"timezone": NUL}, ["body", "timezone"]),
    ("user", "GET", "/v1/me/notifications?category=%00", None, ["query", "category"]),
    ("user", "POST", "/v1/me/notifications/read-all", {"category": NUL}, ["body", "category"]),
    (
        "user",
        "PUT",
        "/v1/me/preferences",
        {"categories": {"news": {"channels": {}}}, "timezone": LONE},
        ["body", "timezone"],
    ),
    (
        "user",
        "POST",
        "/v1/me/push-subscriptions",
        {**PUSH, "user_agent": f"ua{NUL}"},
        ["body", "user_agent"],
    ),
    (
        "user",
        "DELETE",
        "/v1/me/push-subscriptions?endpoint=https://p.example/%00",
        None,
        ["query", "endpoint"],
    ),
]


@pytest.mark.parametrize(("who", "method", "url", "body", "loc"), CASES)
def test_unstorable_text_is_a_422_naming_the_field(
    client, producer, admin, user, who, method, url, body, loc
):
    headers = {"producer": producer, "admin": admin, "user": user("ada")}[who]
    r = _send(client, method, url, headers, body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:clarion:problem:validation-error"
    [error] = [e for e in problem["errors"] if e["type"] == "unstorable"]
    assert error["loc"] == loc
    assert "cannot be stored" in error["msg"]


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({"n": float("nan")}, "not a JSON number"),
        ({"n": [float("inf")]}, "not a JSON number"),
        ({"deep": json.loads("[" * 200 + "]" * 200)}, "nested deeper"),
        ({"deep": json.loads("[" * 900 + "]" * 900)}, "nested deeper"),
    ],
)
def test_json_the_database_refuses_or_cannot_reach_is_a_422(client, producer, metadata, says):
    # Python's JSON parser takes NaN and Infinity, which JSONB refuses; and JSON nested
    # ~900 deep made a RecursionError (a 500) in the size check.
    content = json.dumps({**SEND, "metadata": metadata})  # allow_nan: NaN, Infinity
    r = client.post(
        "/v1/notifications",
        content=content,
        headers={**producer, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert error["loc"] == ["body", "metadata"] and says in error["msg"]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/dead-letters/9223372036854775808",
        "/v1/dead-letters?cursor=9223372036854775808",
        "/v1/dead-letters/-9223372036854775809",
        "/v1/rules/lifecycle.link_expiring/runs?cursor=99999999999999999999999",
        "/v1/failed-requests?cursor=9223372036854775808",
    ],
)
def test_an_integer_out_of_range_for_its_column_is_a_422_not_a_500(client, admin, url):
    r = client.get(url, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["type"] in ("less_than_equal", "greater_than_equal")


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_template_version_id_out_of_range_is_a_422(client, admin, method):
    path = "/v1/templates/k/versions/9223372036854775808"
    r = client.request(method, path + ("/activate" if method == "POST" else ""), headers=admin)
    assert r.status_code == 422, r.text
    r = client.post("/v1/templates/k/preview", json={"version_id": 2**63}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "version_id"]


def test_a_huge_cursor_on_the_live_stream_is_refused_not_a_server_error(client, user):
    r = client.get("/v1/me/stream/sse?since=9223372036854775808", headers=user("ada"))
    assert r.status_code == 422


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "https://example.com/\n",
    ],
)
def test_a_link_that_could_run_script_is_a_422(client, producer, link):
    r = client.post("/v1/notifications", json={**SEND, "url": link}, headers=producer)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "url"]


@pytest.mark.parametrize(
    "link", ["https://app.example/links/abc", "http://app.example", "/links/abc", "links?id=1"]
)
def test_http_and_relative_links_are_accepted(client, producer, link):
    r = client.post("/v1/notifications", json={**SEND, "url": link}, headers=producer)
    assert r.status_code == 202, r.text


def test_a_validation_error_does_not_echo_a_huge_input(client, producer, user):
    # The message of a refused time zone quotes it; the location of a refused key is it.
    huge = "Europe/" + "x" * 900_000
    r = client.put("/v1/subscribers/ada", json={"timezone": huge}, headers=producer)
    assert r.status_code == 422
    assert len(r.content) < 2_000
    body = {"categories": {"-" * 900_000: {"channels": {}}}}
    r = client.put("/v1/me/preferences", json=body, headers=user("ada"))
    assert r.status_code == 422
    assert len(r.content) < 2_000


@pytest.mark.parametrize("where", ["template", "subscriber"])
def test_a_locale_longer_than_its_column_is_a_422(client, admin, where):
    # Found by the fuzz test: the pattern allowed any number of subtags; the column has 35.
    locale = "en" + "-abcdefgh" * 5
    if where == "template":
        body = {"key": "k", "locale": locale, "subject": "s"}
        r = client.post("/v1/templates", json=body, headers=admin)
    else:
        r = client.put("/v1/subscribers/ada", json={"locale": locale}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "locale"]


@pytest.mark.parametrize("field", ["expires_at", "send_at"])
@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_a_time_past_year_9999_in_utc_is_a_422(client, producer, user, field, when):
    # PostgreSQL stored it; Python could not read it back: the recipient's inbox was a 500.
    r = client.post("/v1/notifications", json={**SEND, field: when}, headers=producer)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", field]
    drain(client.app.state.runtime.celery)
    assert client.get("/v1/me/notifications", headers=user("ada")).status_code == 200
    event = {"type": "a.b", "occurred_at": when}
    assert client.post("/v1/events", json=event, headers=producer).status_code == 422
