"""Failed authentications per client address (docs/operations/rate-limits.md) on every
door, not only the REST routes: the MCP endpoint's bearer key and the notification
centre's sign-in and session exchange count against the same limit, and over it answer
429 problem+json with ``Retry-After``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.core.auth import ui_login_token, ui_session_token
from tests.conftest import make_key

MCP_PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def api(make_runtime):
    """An API process whose addresses may fail 3 times a minute."""
    rt = make_runtime(auth_failure_rate_limit="3/minute")
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **MCP_HEADERS}


def assert_refused(answer) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:clarion:problem:rate-limited"
    assert answer.json()["limit"] == "auth-failures"
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert answer.headers["ratelimit-policy"] == '"auth-failures";q=3;w=60'


def test_guessing_keys_on_the_mcp_endpoint_is_limited(api, runtime):
    good = make_key(runtime, "notify")
    assert api.post("/mcp", json=MCP_PING, headers=bearer(good)).status_code == 200

    codes = [api.post("/mcp", json=MCP_PING, headers=bearer(f"clk_guess{i}")) for i in range(3)]
    refused = api.post("/mcp", json=MCP_PING, headers=bearer("clk_guess4"))
    lucky = api.post("/mcp", json=MCP_PING, headers=bearer(good))

    assert [a.status_code for a in codes] == [401] * 3
    assert_refused(refused)
    assert_refused(lucky)  # blocked: even a right guess gets nowhere until the wait ends


def test_mcp_and_rest_failures_count_together(api, runtime):
    for i in range(2):
        assert api.post("/mcp", json=MCP_PING, headers=bearer(f"clk_{i}")).status_code == 401
    assert api.get("/v1/keys", headers=bearer("clk_rest")).status_code == 401  # the 3rd
    assert_refused(api.post("/mcp", json=MCP_PING, headers=bearer("clk_again")))


def test_guessing_sign_in_links_is_limited(api, runtime):
    answers = [api.post("/ui/session", json={"login": f"not-a-link-{i}"}) for i in range(4)]
    lucky = api.post("/ui/session", json={"login": ui_login_token(runtime.settings, "ada")})

    assert [a.status_code for a in answers[:3]] == [401] * 3
    assert answers[0].headers["content-type"] == "application/problem+json"
    assert_refused(answers[3])
    assert_refused(lucky)


def test_forged_session_cookies_are_limited_and_signed_out_pages_are_not(api, runtime):
    for _ in range(10):  # a page that is not signed in asks on every load
        assert api.post("/ui/session/token").status_code == 401
    api.cookies.set("clarion_ui_session", ui_session_token(runtime.settings, "ada", 600))
    assert api.post("/ui/session/token").json()["subscriber"] == "ada"

    api.cookies.set("clarion_ui_session", "forged")
    codes = [api.post("/ui/session/token").status_code for _ in range(3)]
    refused = api.post("/ui/session/token")

    assert codes == [401] * 3
    assert_refused(refused)
