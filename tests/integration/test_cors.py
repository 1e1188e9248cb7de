"""CORS for the REST API (``CLARION_CORS_ORIGINS``), asked the way a browser asks, and the
live stream accepting the same origins."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from clarion.api.app import create_app
from clarion.core.auth import issue_user_token

APP = "https://app.example"
INBOX = "/v1/me/notifications"
# What Chromium sends before a PATCH with a bearer token and a JSON body from another origin.
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "PATCH",
    "Access-Control-Request-Headers": "authorization,content-type",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Dest": "empty",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36",
}


@pytest.fixture
def cors(make_runtime):
    runtime = make_runtime(cors_origins=[APP], stream_allowed_origins=[])
    with TestClient(create_app(runtime=runtime)) as client:
        yield client, runtime


def test_a_preflight_from_an_allowed_origin_is_answered(cors):
    client, _ = cors
    answer = client.options(f"{INBOX}/0190a3c8-0000-7000-8000-000000000000", headers=PREFLIGHT)

    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert "PATCH" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "access-control-allow-credentials" not in answer.headers  # tokens, not cookies
    assert int(answer.headers["access-control-max-age"]) > 0


def test_the_answer_itself_carries_the_origin_and_exposes_retry_after(cors, user):
    client, _ = cors
    answer = client.get(f"{INBOX}/unread-count", headers={**user("ada"), "Origin": APP})
    refused = client.get(f"{INBOX}/unread-count", headers={"Origin": APP})  # no token

    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert "retry-after" in answer.headers["access-control-expose-headers"].lower()
    # an error is readable too: the page can show why
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP


def test_other_origins_get_no_cors_headers(cors, user):
    client, _ = cors
    preflight = client.options(INBOX, headers={**PREFLIGHT, "Origin": "https://evil.example"})
    answer = client.get(INBOX, headers={**user("ada"), "Origin": "https://evil.example"})

    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in answer.headers


def test_without_cors_origins_no_preflight_is_answered(client):
    answer = client.options(INBOX, headers=PREFLIGHT)
    assert answer.status_code == 405
    assert "access-control-allow-origin" not in answer.headers


def test_the_stream_accepts_the_cors_origins_too(cors):
    client, runtime = cors
    url = f"/v1/me/stream?token={issue_user_token(runtime.settings, 'ada')}"

    with client.websocket_connect(url, headers={"Origin": APP}) as ws:
        assert ws.receive_json()["type"] == "unread_count"
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect(url, headers={"Origin": "https://evil.example"}),
    ):
        pass
    assert refused.value.status_code == 403
