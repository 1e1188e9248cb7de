"""Bad tokens and cursors are clean refusals on the real API; rotated keys keep links working."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from clarion.api.app import create_app
from clarion.channels.links import unsubscribe_token
from clarion.core.auth import issue_user_token
from tests.conftest import SECRET, server_settings


def token_for(subject: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "aud": "clarion", "iat": now, "exp": now + 600}, SECRET)


@pytest.mark.parametrize("subject", ["nul\x00inside", "lone \udc80 surrogate", "x" * 256])
def test_a_token_whose_subject_cannot_be_a_subscriber_is_a_401_not_a_500(client, subject):
    token = token_for(subject)
    for path in ("/v1/me/notifications", "/v1/me/stream/sse"):
        answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect(f"/v1/me/stream?token={token}"),
    ):
        pass
    assert refused.value.status_code == 401


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Last-Event-ID", str(10**30)),
        ("Last-Event-ID", "9" * 5000),  # past int()'s digit limit
        ("Last-Event-ID", b"\xb2"),  # "²" in latin-1: a digit to str.isdigit, not to int()
        ("since", str(10**30)),
    ],
)
def test_cursors_that_are_not_cursors_are_422_on_sse(client, runtime, name, value):
    token = issue_user_token(runtime.settings, "ada")
    query = {"token": token, **({"since": value} if name == "since" else {})}
    headers = {name: value} if name != "since" else {}
    answer = client.get("/v1/me/stream/sse", params=query, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_websocket_since_beyond_a_bigint_is_422(client, runtime):
    token = issue_user_token(runtime.settings, "ada")
    for since in (str(10**30), "9" * 5000):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(f"/v1/me/stream?token={token}&since={since}"),
        ):
            pass
        assert refused.value.status_code == 422


def test_unsubscribe_links_signed_before_a_rotation_work_until_the_old_key_retires(runtime, pg_url):
    old = runtime.settings
    link = unsubscribe_token(old, "ada", "news", "email")
    new_secret = "rotated-" + "k" * 40

    def unsubscribe(until: datetime) -> int:
        runtime.settings = server_settings(
            pg_url,
            secret_key=new_secret,
            previous_secret_keys=[{"key": SECRET, "until": until.isoformat()}],
        )
        with TestClient(create_app(runtime=runtime)) as client:
            return client.post("/v1/unsubscribe", params={"token": link}).status_code

    assert unsubscribe(datetime.now(UTC) + timedelta(days=90)) == 200
    assert unsubscribe(datetime.now(UTC) - timedelta(seconds=1)) == 400
