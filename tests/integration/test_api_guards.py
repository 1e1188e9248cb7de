"""What every request meets before the routing: body limits, early 401s, token size,
security headers (clarion/api/guards.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import jwt

from clarion.api.app import create_app
from clarion.channels.links import unsubscribe_token
from clarion.ids import utcnow
from tests.broker import queued

SEND = "/v1/notifications"
MESSAGE = {"recipients": ["alice"], "category": "links", "title": "Your link expires"}


def chunks(data: bytes, size: int = 64 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_chunked_body_over_the_limit_is_413_and_nothing_is_sent(client, runtime, producer):
    huge = json.dumps({**MESSAGE, "body": "x" * (2 * 1024 * 1024)}).encode()
    response = client.post(
        SEND, content=chunks(huge), headers={**producer, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["type"] == "urn:clarion:problem:body-too-large"
    assert response.headers["connection"] == "close"
    assert queued(runtime.celery) == 0


def test_a_chunked_body_within_the_limit_is_served(client, runtime, producer):
    data = json.dumps(MESSAGE).encode()
    response = client.post(
        SEND, content=chunks(data, 7), headers={**producer, "Content-Type": "application/json"}
    )
    assert response.status_code == 202


def call_raw(app, method: str, path: str, headers: list, query: bytes = b""):
    """Call the ASGI app directly; returns (status, whether it asked for the body)."""
    asked, sent = [], []

    async def receive():
        asked.append(True)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], bool(asked)


def test_a_body_for_an_authenticated_route_without_a_credential_is_never_read(runtime):
    app = create_app(runtime=runtime)
    for authorization in ([], [(b"authorization", b"Basic YTpi")], [(b"authorization", b"Bearer")]):
        headers = [(b"transfer-encoding", b"chunked"), *authorization]
        assert call_raw(app, "POST", SEND, headers) == (401, False), authorization
        headers = [(b"content-length", b"2"), *authorization]
        assert call_raw(app, "PUT", "/v1/me/preferences", headers) == (401, False)
    # A public route with a body is served as usual (its own check answers).
    headers = [(b"content-length", b"2"), (b"content-type", b"application/x-www-form-urlencoded")]
    assert call_raw(app, "POST", "/v1/unsubscribe", headers, b"token=nope")[0] == 400


def test_a_user_token_over_8_kib_is_refused_even_when_signed(client, runtime):
    now = utcnow()
    claims = {"sub": "alice", "aud": "clarion", "iat": now, "exp": now + timedelta(hours=1)}
    secret = runtime.settings.secret_key.get_secret_value()
    small = jwt.encode(claims, secret, algorithm="HS256")
    padded = jwt.encode({**claims, "pad": "x" * 9000}, secret, algorithm="HS256")
    assert client.get("/v1/me/notifications", headers=_bearer(small)).status_code == 200
    refused = client.get("/v1/me/notifications", headers=_bearer(padded))
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:clarion:problem:unauthorized"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_answer_is_nosniff_and_authenticated_ones_are_not_stored(client, user, producer):
    public = client.get("/healthz")
    assert public.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in public.headers.get("cache-control", "")
    for response in (
        client.get("/v1/me/notifications", headers=user("alice")),
        client.get("/v1/me/notifications", headers=_bearer("not-a-token")),  # 401 too
        client.post(SEND, json=MESSAGE, headers=producer),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store", response.request.url


def test_the_unsubscribe_page_cannot_be_framed_nor_leak_its_link(client, runtime):
    token = unsubscribe_token(runtime.settings, "alice", "links", "email")
    page = client.get("/v1/unsubscribe", params={"token": token})
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_csp_helper_keeps_frame_ancestors_unless_told():
    from clarion.api.guards import content_security_policy

    policy = content_security_policy(script_src="'self'", style_src=None)
    assert "script-src 'self'" in policy
    assert "style-src" not in policy
    assert "frame-ancestors 'none'" in policy
