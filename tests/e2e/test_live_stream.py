"""Live events end to end: a worker, two API processes, real Redis and PostgreSQL.

One cluster serves the module; each test uses its own users, so they do not interfere.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clarion.core.auth import issue_user_token
from tests.conftest import process_env, server_settings
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e


class Cluster:
    def __init__(self, pg_url: str, tmp) -> None:
        self.settings = server_settings(pg_url)
        self.env = process_env(
            pg_url, CLARION_LOG_LEVEL="WARNING", CLARION_STREAM_HEARTBEAT_SECONDS="1"
        )
        self.key = run(["keys", "create", "live", "--scope", "notify"], self.env).split()[-1]
        self.ports = [free_port(), free_port()]
        self.worker = Proc(["worker", "--concurrency", "2"], self.env, tmp / "worker.log")
        self.apis = [
            Proc(["api", "--port", str(p)], self.env, tmp / f"api{i}.log")
            for i, p in enumerate(self.ports)
        ]
        for port, api in zip(self.ports, self.apis, strict=True):
            wait_ready(f"http://127.0.0.1:{port}", api)

    def http(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def ws(self, i: int, user: str, since: int | None = None, token: str | None = None) -> str:
        token = token or issue_user_token(self.settings, user)
        query = f"token={token}" + (f"&since={since}" if since is not None else "")
        return f"ws://127.0.0.1:{self.ports[i]}/v1/me/stream?{query}"

    def send(self, user: str, title: str = "hello", api: int = 0) -> str:
        answer = httpx.post(
            f"{self.http(api)}/v1/notifications",
            json={"recipients": [user], "category": "live", "title": title},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["notifications"][0]["id"]

    def inbox(self, user: str) -> list[dict]:
        headers = {"Authorization": f"Bearer {issue_user_token(self.settings, user)}"}
        return httpx.get(f"{self.http(0)}/v1/me/notifications", headers=headers).json()["items"]

    def stop(self) -> None:
        for proc in (*self.apis, self.worker):
            proc.stop()


@pytest.fixture(scope="module")
def cluster(pg_url, redis_client, tmp_path_factory):
    c = Cluster(pg_url, tmp_path_factory.mktemp("live"))
    yield c
    c.stop()


def user() -> str:
    return f"live-{uuid.uuid4().hex[:8]}"


async def next_event(ws, kind: str, timeout: float = 10) -> dict:
    """The next event of this type, skipping heartbeats and the like."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        event = json.loads(raw)
        if event["type"] == kind:
            return event


async def log_events(ws, seconds: float) -> list[dict]:
    """Every non-heartbeat event received during ``seconds``."""
    events, deadline = [], time.monotonic() + seconds
    with pytest.raises(TimeoutError):
        while True:
            event = json.loads(
                await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            )
            if event["type"] != "heartbeat":
                events.append(event)
    return events


def test_created_through_one_api_process_arrives_on_the_other(cluster):
    me = user()

    async def scenario():
        async with connect(cluster.ws(1, me)) as ws:
            first = await next_event(ws, "unread_count")
            assert first["data"] == {"total": 0, "by_category": {}, "unseen": 0}
            nid = await asyncio.to_thread(cluster.send, me, "to the other process", 0)
            created = await next_event(ws, "notification.created")
            assert (
                created["data"]["id"] == nid and created["data"]["title"] == "to the other process"
            )
            assert created["cursor"] == 1

    asyncio.run(scenario())


def test_reconnect_with_a_cursor_replays_exactly_what_was_missed_then_goes_live(cluster):
    me = user()

    async def scenario():
        async with connect(cluster.ws(1, me)) as ws:
            cursor = (await next_event(ws, "unread_count"))["cursor"]
        missed = [await asyncio.to_thread(cluster.send, me, f"missed {i}") for i in range(5)]
        await asyncio.to_thread(
            wait_for, lambda: len(cluster.inbox(me)) == 5, 20, "five stored notifications"
        )
        async with connect(cluster.ws(1, me, since=cursor)) as ws:
            replayed = [await next_event(ws, "notification.created") for _ in range(5)]
            count = await next_event(ws, "unread_count")
            live = await asyncio.to_thread(cluster.send, me, "live again")
            after = await next_event(ws, "notification.created")
            extra = await log_events(ws, 1.5)

        # Exactly the five missed, in the order they were stored: two workers may commit
        # back-to-back sends in either order, and the cursor (not the send) sets the order.
        assert sorted(e["data"]["id"] for e in replayed) == sorted(missed)
        assert [e["cursor"] for e in replayed] == list(range(cursor + 1, cursor + 6))
        assert count["data"]["total"] == 5
        assert after["data"]["id"] == live and after["cursor"] == cursor + 6
        assert [e for e in extra if e["type"].startswith("notification")] == []

    asyncio.run(scenario())


def test_reading_in_one_tab_updates_every_other_tab(cluster):
    me = user()
    token = issue_user_token(cluster.settings, me)

    async def scenario():
        async with connect(cluster.ws(0, me)) as tab_a, connect(cluster.ws(1, me)) as tab_b:
            nid = await asyncio.to_thread(cluster.send, me)
            await next_event(tab_a, "notification.created")
            await next_event(tab_b, "notification.created")
            read = await asyncio.to_thread(
                httpx.patch,
                f"{cluster.http(0)}/v1/me/notifications/{nid}",
                json={"read": True},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert read.status_code == 200
            updated = await next_event(tab_b, "notification.updated")
            count = await next_event(tab_b, "unread_count")
        assert updated["data"]["ids"] == [nid] and updated["data"]["read_at"]
        assert count["data"] == {"total": 0, "by_category": {}, "unseen": 0}
        assert count["cursor"] == updated["cursor"] == 2

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["missing", "expired", "garbage", "other-secret"])
def test_bad_tokens_are_refused_at_the_handshake(cluster, kind):
    now = datetime.now(UTC)
    tokens = {
        "missing": "",
        "expired": issue_user_token(cluster.settings, "x", ttl_seconds=-120),
        "garbage": "not-a-token",
        "other-secret": jwt.encode(
            {"sub": "x", "aud": "clarion", "exp": now + timedelta(minutes=5)}, "y" * 40
        ),
    }
    url = f"ws://127.0.0.1:{cluster.ports[0]}/v1/me/stream?token={tokens[kind]}"

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 401

    asyncio.run(scenario())


def test_a_user_never_receives_another_users_events(cluster):
    me, them = user(), user()

    async def scenario():
        async with connect(cluster.ws(1, me)) as ws:
            await next_event(ws, "unread_count")
            for i in range(3):
                await asyncio.to_thread(cluster.send, them, f"private {i}")
            await asyncio.to_thread(
                wait_for, lambda: len(cluster.inbox(them)) == 3, 20, "their notifications"
            )
            assert await log_events(ws, 1.5) == []

    asyncio.run(scenario())


def test_garbage_from_the_client_does_not_break_the_connection(cluster):
    me = user()

    async def scenario():
        async with connect(cluster.ws(0, me)) as ws:
            await next_event(ws, "unread_count")
            for frame in ["not json", "[1, 2]", '{"type": "resume", "cursor": "x"}', b"\x00\xff"]:
                await ws.send(frame)
            nid = await asyncio.to_thread(cluster.send, me)
            assert (await next_event(ws, "notification.created"))["data"]["id"] == nid

    asyncio.run(scenario())
    assert httpx.get(f"{cluster.http(0)}/healthz").status_code == 200


def test_sse_resumes_from_last_event_id(cluster):
    me = user()
    token = issue_user_token(cluster.settings, me)
    url = f"{cluster.http(1)}/v1/me/stream/sse?token={token}"

    def read_events(headers: dict, wanted: int) -> list[tuple[str | None, dict]]:
        found: list[tuple[str | None, dict]] = []
        event_id = None
        with httpx.stream("GET", url, headers=headers, timeout=10) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["type"] == "notification.created":
                        found.append((event_id, event))
                        if len(found) == wanted:
                            return found
        return found

    first = cluster.send(me, "one")
    wait_for(lambda: len(cluster.inbox(me)) == 1, 20, "first stored")
    [(last_id, event)] = read_events({"Last-Event-ID": "0"}, 1)
    assert event["data"]["id"] == first and last_id == "1"
    missed = [cluster.send(me, f"missed {i}") for i in range(2)]
    wait_for(lambda: len(cluster.inbox(me)) == 3, 20, "all stored")

    resumed = read_events({"Last-Event-ID": last_id}, 2)

    assert [e["data"]["id"] for _, e in resumed] == missed
    assert [i for i, _ in resumed] == ["2", "3"]


def test_sse_without_a_token_is_401(cluster):
    response = httpx.get(f"{cluster.http(0)}/v1/me/stream/sse")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_an_api_process_stopping_closes_its_streams_with_1012(pg_url, redis_client, tmp_path):
    env = process_env(pg_url)
    port = free_port()
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    wait_ready(f"http://127.0.0.1:{port}", api)
    token = issue_user_token(server_settings(pg_url), user())

    sse_lines: list[str] = []
    sse_open = threading.Event()

    def read_sse() -> None:
        url = f"http://127.0.0.1:{port}/v1/me/stream/sse?token={token}"
        with httpx.stream("GET", url, timeout=15) as response:
            for line in response.iter_lines():
                sse_open.set()
                sse_lines.append(line)

    sse = threading.Thread(target=read_sse, daemon=True)
    sse.start()

    async def scenario():
        async with connect(f"ws://127.0.0.1:{port}/v1/me/stream?token={token}") as ws:
            await next_event(ws, "unread_count")
            assert sse_open.wait(10)
            api.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd

    try:
        close = asyncio.run(scenario())
        started = time.monotonic()
        # uvicorn re-raises the signal once its graceful shutdown is done: -SIGTERM.
        assert api.popen.wait(10) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 5  # open streams did not hold the shutdown
    finally:
        api.stop()
    assert close.code == 1012 and "reconnect" in close.reason
    sse.join(10)
    assert "event: reconnect" in sse_lines  # the SSE stream ended with its retry hint
