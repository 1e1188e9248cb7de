"""Rate limits and quotas of the API (docs/operations/rate-limits.md): each answers 429 as
problem+json with ``Retry-After`` and the draft-10 ``RateLimit`` / ``RateLimit-Policy``
fields, counted in Redis, with small limits so the tests stay fast."""

from __future__ import annotations

import pytest
import redis as redis_lib
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from clarion.api.app import create_app
from clarion.api.ratelimit import RateLimiter
from clarion.api.routers.live import count_connects
from clarion.core.auth import issue_user_token
from tests.broker import queued
from tests.conftest import make_key

SEND = "/v1/notifications"
INBOX = "/v1/me/notifications"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def send(client: TestClient, key: dict, *recipients: str, topic: str | None = None):
    body = {"topic": topic} if topic else {"recipients": list(recipients)}
    return client.post(SEND, json={**body, "category": "news", "title": "hello"}, headers=key)


def assert_limited(answer, name: str, amount: int, window: int, remaining: int = 0) -> int:
    """The 429 of limit ``name``; returns its Retry-After."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == "urn:clarion:problem:rate-limited"
    assert problem["limit"] == name
    wait = int(answer.headers["retry-after"])
    # A sliding window counter's hits weigh on the next window too (they decay through
    # it): a big request may have to wait for part of that one as well.
    assert 1 <= wait <= (2 * window if name == "daily-quota" else window)
    assert answer.headers["ratelimit-policy"] == f'"{name}";q={amount};w={window}'
    assert answer.headers["ratelimit"] == f'"{name}";r={remaining};t={wait}'
    return wait


@pytest.fixture
def app_of(make_runtime):
    """app_of(**settings) -> a TestClient of an API process with these settings."""
    opened = []

    def make(**overrides) -> TestClient:
        rt = make_runtime(**overrides)
        opened.append(TestClient(create_app(runtime=rt), raise_server_exceptions=False))
        return opened[-1].__enter__()

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def test_an_api_key_is_limited_per_window_and_other_keys_are_not(app_of, runtime):
    api = app_of(api_key_rate_limit="3/minute")
    noisy, quiet = bearer(make_key(runtime, "notify")), bearer(make_key(runtime, "notify"))

    codes = [send(api, noisy, "ada").status_code for _ in range(3)]
    refused = api.get(f"{SEND}/00000000-0000-0000-0000-000000000000", headers=noisy)

    assert codes == [202] * 3
    assert_limited(refused, "api-key", 3, 60)
    assert send(api, quiet, "ada").status_code == 202


def test_the_daily_quota_counts_recipients_and_a_fanout_its_topic(app_of, runtime):
    admin = bearer(make_key(runtime, "admin"))
    api = app_of(api_key_daily_quota=6)
    members = {"add": ["a", "b", "c", "d"]}
    assert api.put("/v1/topics/news/subscribers", json=members, headers=admin).status_code == 200
    key = bearer(make_key(runtime, "notify"))

    assert send(api, key, topic="news").status_code == 202  # 4 recipients
    over = send(api, key, topic="news")  # 4 more: refused, and not counted
    fits = send(api, key, "x", "y")  # the last 2

    assert_limited(over, "daily-quota", 6, 86400, remaining=2)
    assert "recipients" in over.json()["detail"]
    assert fits.status_code == 202
    assert_limited(send(api, key, "z"), "daily-quota", 6, 86400)


def test_a_send_refused_by_its_limit_is_never_published(app_of, runtime):
    api = app_of(api_key_rate_limit="2/minute")
    key = bearer(make_key(runtime, "notify"))

    codes = [send(api, key, f"u{i}").status_code for i in range(4)]

    assert codes == [202, 202, 429, 429]
    assert queued(runtime.celery) == 2  # one task per accepted send, none for the 429s


def test_a_replayed_send_is_not_charged_again(app_of, runtime):
    api = app_of(api_key_daily_quota=2)
    key = {**bearer(make_key(runtime, "notify")), "Idempotency-Key": "once"}
    answers = [send(api, key, "a", "b") for _ in range(3)]
    assert [a.status_code for a in answers] == [202] * 3
    assert answers[-1].headers["idempotent-replayed"] == "true"


def test_an_end_user_is_limited_on_the_inbox_api(app_of, user):
    api = app_of(user_rate_limit="3/minute")
    codes = [api.get(INBOX, headers=user("ada")).status_code for _ in range(3)]
    refused = api.post(f"{INBOX}/read-all", headers=user("ada"))
    assert codes == [200] * 3
    assert_limited(refused, "user", 3, 60)
    assert api.get(INBOX, headers=user("bob")).status_code == 200


def test_stream_connects_are_limited_per_user_websocket_and_sse_alike(app_of, runtime):
    api = app_of(stream_connect_rate_limit="2/minute")
    token = issue_user_token(runtime.settings, "ada")
    for _ in range(2):
        with api.websocket_connect(f"/v1/me/stream?token={token}") as ws:
            assert ws.receive_json()["type"] == "unread_count"

    sse = api.get(f"/v1/me/stream/sse?token={token}")
    with (
        pytest.raises(WebSocketDenialResponse) as ws_refused,
        api.websocket_connect(f"/v1/me/stream?token={token}"),
    ):
        pass

    assert_limited(sse, "stream-connect", 2, 60)
    assert ws_refused.value.status_code == 429
    assert ws_refused.value.headers["ratelimit"].startswith('"stream-connect";r=0;t=')
    other = issue_user_token(runtime.settings, "bob")
    with api.websocket_connect(f"/v1/me/stream?token={other}") as ws:
        assert ws.receive_json()["type"] == "unread_count"


def test_connects_counted_in_one_batch_are_each_counted(runtime):
    limiter = RateLimiter(runtime.limits)
    asks = [("2/minute", "ada")] * 3 + [("2/minute", "bob")]

    refused = count_connects(limiter, asks)

    assert refused[:2] == [None, None] and refused[3] is None
    assert refused[2].status == 429 and refused[2].headers["RateLimit"].startswith(
        '"stream-connect";r=0;t='
    )


def test_a_batch_of_connects_is_counted_after_redis_forgot_the_script(runtime, redis_client):
    # The batch's EVALSHAs go out in one pipeline; a Redis restart (here: SCRIPT FLUSH)
    # must not turn a herd of connects into errors.
    limiter = RateLimiter(runtime.limits)
    count_connects(limiter, [("1/minute", "cyd")])
    redis_lib.Redis.from_url(runtime.settings.redis_url).script_flush()

    refused = count_connects(limiter, [("1/minute", "cyd"), ("1/minute", "dee")])

    assert refused[0] is not None and refused[0].status == 429 and refused[1] is None


def test_failed_authentications_are_limited_per_address_and_good_ones_never_count(
    app_of, runtime, user
):
    api = app_of(auth_failure_rate_limit="3/minute")
    good, bad = bearer(make_key(runtime, "notify")), bearer("clk_guess")

    codes = [send(api, bad, "a").status_code for _ in range(2)]
    codes += [send(api, good, "a").status_code for _ in range(10)]  # not counted
    codes += [api.get(INBOX, headers=bearer("not-a-token")).status_code]  # the 3rd failure
    refused = send(api, bad, "a")

    assert codes == [401, 401] + [202] * 10 + [401]
    assert_limited(refused, "auth-failures", 3, 60)
    # Now blocked: this process refuses the address whatever it sends, so that a lucky
    # guess would not get through either.
    assert api.get(INBOX, headers=user("ada")).status_code == 429


def test_good_requests_alone_never_reach_the_failure_limit(app_of, runtime, user):
    api = app_of(auth_failure_rate_limit="1/minute")
    key = bearer(make_key(runtime, "notify"))
    codes = {send(api, key, "a").status_code for _ in range(20)}
    codes |= {api.get(INBOX, headers=user("ada")).status_code for _ in range(20)}
    assert codes == {200, 202}


def test_admins_set_a_keys_own_limits_over_the_api(app_of, runtime):
    api = app_of(api_key_rate_limit="100/minute")
    admin = bearer(make_key(runtime, "admin"))
    secret = make_key(runtime, "notify")
    [_, mine] = api.get("/v1/keys", headers=admin).json()
    assert (mine["rate_limit"], mine["daily_quota"]) == (None, None)

    changed = api.patch(f"/v1/keys/{mine['id']}", json={"rate_limit": "2/minute"}, headers=admin)
    bad = api.patch(f"/v1/keys/{mine['id']}", json={"rate_limit": "lots"}, headers=admin)
    missing = api.patch("/v1/keys/999", json={"daily_quota": 5}, headers=admin)
    as_producer = api.get("/v1/keys", headers=bearer(secret))

    assert changed.status_code == 200 and changed.json()["rate_limit"] == "2/minute"
    assert bad.status_code == 422 and missing.status_code == 404
    assert as_producer.status_code == 403  # refused before it is counted
    codes = [send(api, bearer(secret), "a").status_code for _ in range(3)]
    assert codes == [202, 202, 429]  # its own 2/minute, not the setting's 100


def test_a_stream_connect_is_refused_with_503_while_the_counters_are_unreachable(
    app_of, runtime, monkeypatch
):
    from clarion.core.ratelimits import LimitsUnavailable

    api = app_of()

    def down(checks):
        raise LimitsUnavailable("stream-connect")

    monkeypatch.setattr(api.app.state.runtime.limits, "hit_each", down)
    token = issue_user_token(runtime.settings, "ada")
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        api.websocket_connect(f"/v1/me/stream?token={token}"),
    ):
        pass

    assert refused.value.status_code == 503
    assert api.app.state.hub.count() == 0  # the held connection is gone
