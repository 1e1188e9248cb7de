"""A live stream lives as long as its token: real API and worker processes.

Expiry is about wall-clock time in another process, so these run against ``clarion api``
with tokens that expire a couple of seconds after they are made.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clarion.core.auth import issue_user_token
from tests.conftest import SECRET, process_env, server_settings
from tests.e2e.procs import Proc, free_port, run, wait_ready
from tests.e2e.test_live_stream import next_event

pytestmark = pytest.mark.e2e
WEEK = 7 * 24 * 3600


class Api:
    def __init__(self, pg_url: str, tmp) -> None:
        self.settings = server_settings(pg_url)
        self.env = process_env(pg_url, CLARION_LOG_LEVEL="INFO")
        self.key = run(["keys", "create", "tokens", "--scope", "notify"], self.env).split()[-1]
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.worker = Proc(["worker", "--concurrency", "1"], self.env, tmp / "worker.log")
        self.api = Proc(["api", "--port", str(self.port)], self.env, tmp / "api.log")
        wait_ready(self.http, self.api)

    def ws(self, token: str) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/me/stream?token={token}"

    def send(self, user: str, title: str) -> str:
        answer = httpx.post(
            f"{self.http}/v1/notifications",
            json={"recipients": [user], "category": "live", "title": title},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["notifications"][0]["id"]


@pytest.fixture(scope="module")
def api(pg_url, redis_client, tmp_path_factory):
    a = Api(pg_url, tmp_path_factory.mktemp("tokens"))
    yield a
    a.api.stop()
    a.worker.stop()


def user() -> str:
    return f"tok-{uuid.uuid4().hex[:8]}"


def expiring(settings, subject: str, seconds: int = 2) -> tuple[str, float]:
    token = issue_user_token(settings, subject, ttl_seconds=seconds)
    return token, jwt.decode(token, options={"verify_signature": False})["exp"]


async def closed(ws, timeout: float = 10) -> tuple[ConnectionClosed, float, list[dict]]:
    """Read until the server closes: the close, when it came, and the events before it."""
    events = []
    with pytest.raises(ConnectionClosed) as close:
        while True:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return close.value, time.time(), [e for e in events if e["type"] != "heartbeat"]


def test_a_websocket_closes_with_4401_when_its_token_expires(api):
    me = user()
    token, exp = expiring(api.settings, me)

    async def scenario():
        async with connect(api.ws(token)) as ws:
            await next_event(ws, "unread_count")
            return await closed(ws)

    close, at, _ = asyncio.run(scenario())
    assert close.rcvd.code == 4401 and close.rcvd.reason.startswith("reauth")
    assert exp - 0.1 <= at <= exp + 1.5, (exp, at)


def test_the_maximum_lifetime_ends_a_stream_before_a_later_exp(api):
    now = int(time.time())
    claims = {"sub": user(), "aud": "clarion", "iat": now - WEEK + 2, "exp": now + 3600}
    token = jwt.encode(claims, SECRET)

    async def scenario():
        async with connect(api.ws(token)) as ws:
            return await closed(ws)

    close, at, _ = asyncio.run(scenario())
    assert close.rcvd.code == 4401
    assert at <= now + 2 + 1.5


def test_sse_ends_with_a_reauth_event_when_its_token_expires(api):
    token, exp = expiring(api.settings, user())
    lines: list[str] = []
    with httpx.stream(
        "GET", f"{api.http}/v1/me/stream/sse", params={"token": token}, timeout=10
    ) as response:
        for line in response.iter_lines():
            lines.append(line)
    ended = time.time()
    assert "event: reauth" in lines, lines
    reauth = json.loads(lines[lines.index("event: reauth") + 1].removeprefix("data: "))
    assert reauth["type"] == "reauth" and "fresh token" in reauth["reason"]
    assert exp - 0.1 <= ended <= exp + 1.5


def test_an_auth_message_with_a_fresh_token_keeps_the_stream_open(api):
    me = user()
    token, exp = expiring(api.settings, me)

    async def scenario():
        async with connect(api.ws(token)) as ws:
            await next_event(ws, "unread_count")
            fresh = issue_user_token(api.settings, me, ttl_seconds=60)
            await ws.send(json.dumps({"type": "auth", "token": fresh}))
            await asyncio.sleep(max(0, exp - time.time()) + 1.5)
            nid = await asyncio.to_thread(api.send, me, "after the first token expired")
            created = await next_event(ws, "notification.created")
            return nid, created

    nid, created = asyncio.run(scenario())
    assert created["data"]["id"] == nid


@pytest.mark.parametrize(
    ("whose", "code"), [("another subscriber's", 1008), ("expired", 4401), ("garbage", 4401)]
)
def test_an_auth_message_that_cannot_renew_closes_the_stream(api, whose, code):
    me = user()
    tokens = {
        "another subscriber's": issue_user_token(api.settings, user()),
        "expired": issue_user_token(api.settings, me, ttl_seconds=-120),
        "garbage": "not-a-token",
    }

    async def scenario():
        async with connect(api.ws(issue_user_token(api.settings, me))) as ws:
            await next_event(ws, "unread_count")
            await ws.send(json.dumps({"type": "auth", "token": tokens[whose]}))
            return await closed(ws, timeout=5)

    close, _, _ = asyncio.run(scenario())
    assert close.rcvd.code == code


@pytest.mark.parametrize("cursor", [10**30, 2**63, -1, "5", 1.5, True, None])
def test_a_resume_to_something_that_is_not_a_cursor_is_a_clean_1008(api, cursor):
    before = api.api.output().count("Traceback")

    async def scenario():
        async with connect(api.ws(issue_user_token(api.settings, user()))) as ws:
            await next_event(ws, "unread_count")
            await ws.send(json.dumps({"type": "resume", "cursor": cursor}))
            return await closed(ws, timeout=5)

    close, _, _ = asyncio.run(scenario())
    assert close.rcvd.code == 1008 and "cursor" in close.rcvd.reason
    assert api.api.output().count("Traceback") == before
    assert httpx.get(f"{api.http}/healthz").status_code == 200


def test_a_resume_to_a_cursor_from_the_future_is_a_resync(api):
    me = user()

    async def scenario():
        async with connect(api.ws(issue_user_token(api.settings, me))) as ws:
            await next_event(ws, "unread_count")
            await ws.send(json.dumps({"type": "resume", "cursor": 2**63 - 1}))
            resync = await next_event(ws, "resync")
            # Still live, from the head: the next notification is cursor 1.
            nid = await asyncio.to_thread(api.send, me, "after the resync")
            created = await next_event(ws, "notification.created")
            return resync, nid, created

    resync, nid, created = asyncio.run(scenario())
    assert resync["cursor"] == 0
    assert created["data"]["id"] == nid and created["cursor"] == 1
