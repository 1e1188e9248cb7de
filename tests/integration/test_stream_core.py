"""The gateway's ordering guarantees on PostgreSQL, with events forced out of order."""

from __future__ import annotations

import asyncio

from clarion.api.stream import REPLACED, RESYNC, Connection, Hub, events
from clarion.core import send, stream
from clarion.core.create import create_notifications
from clarion.core.schemas import NotificationCreate
from tests.conftest import server_settings


class Captured:
    """A publisher that keeps events instead of sending them (to replay them in any order)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def publish_many(self, events: list[dict]) -> None:
        self.events += events


def create(runtime, recipient: str, n: int) -> list[dict]:
    captured = Captured()
    for i in range(n):
        msg = send.prepare(NotificationCreate(recipients=[recipient], category="x", title=f"n{i}"))
        create_notifications(
            [msg],
            sessions=runtime.sessions,
            settings=runtime.settings,
            publisher=captured,
            dispatcher=runtime,
            channels=runtime.channels,
        )
    return captured.events


async def collect(runtime, conn: Connection, since, feed: list[dict], count: int) -> list[dict]:
    out: list[dict] = []
    gen = events(runtime, conn, since)
    for event in feed:
        conn.offer(event)
    async for event in gen:
        if event["type"] != "heartbeat":
            out.append(event)
        if len(out) == count:
            await gen.aclose()
            return out
    return out


def test_live_events_arriving_out_of_order_are_delivered_in_order_without_gaps(runtime):
    conn = Connection("u", 100)

    async def scenario():
        gen = events(runtime, conn, None)  # live from the current cursor (0)
        assert (await gen.__anext__())["type"] == "unread_count"
        published = await asyncio.to_thread(create, runtime, "u", 3)  # seq 1, 2, 3
        # The publishes raced: 3 arrives first, then 1 twice (a duplicate); 2 never does.
        for event in (published[2], published[0], published[0]):
            conn.offer(event)
        conn.offer({"type": "notification.created", "recipient": "u", "cursor": 3})
        got = [await gen.__anext__() for _ in range(3)]
        conn.close(1000, "done")
        rest = [e async for e in gen]
        return got, rest

    got, rest = asyncio.run(scenario())

    assert [(e["type"], e["cursor"]) for e in got] == [
        ("notification.created", n) for n in (1, 2, 3)
    ]
    assert [e["data"]["title"] for e in got] == ["n0", "n1", "n2"]
    assert rest == []  # the late and duplicate copies were not sent again


def test_a_resume_too_far_back_says_resync_with_the_current_cursor(runtime, pg_url):
    create(runtime, "u", 5)
    runtime.settings = server_settings(pg_url, stream_max_replay=2)

    got = asyncio.run(collect(runtime, Connection("u", 100), 0, [], 2))

    assert got[0] == {"type": "resync", "reason": "gap too large: refetch the inbox", "cursor": 5}
    assert got[1]["type"] == "unread_count" and got[1]["data"]["total"] == 5


def test_a_resume_message_replays_from_the_given_cursor(runtime):
    create(runtime, "u", 3)
    conn = Connection("u", 100)

    got = asyncio.run(collect(runtime, conn, None, [{"type": "_resume", "cursor": 1}], 3))

    assert [(e["type"], e["cursor"]) for e in got] == [
        ("unread_count", 3),
        ("notification.created", 2),
        ("notification.created", 3),
    ]


def test_replay_merges_creations_and_inbox_changes_by_cursor(runtime, client, user):
    published = create(runtime, "u", 2)
    nid = published[0]["data"]["id"]
    client.patch(f"/v1/me/notifications/{nid}", json={"read": True}, headers=user("u"))
    client.delete(f"/v1/me/notifications/{nid}", headers=user("u"))

    with runtime.sessions() as s:
        replayed = stream.replay(session=s, recipient_id="u", since=0, limit=10)

    assert [(e["type"], e["cursor"]) for e in replayed] == [
        ("notification.created", 1),
        ("notification.created", 2),
        ("notification.updated", 3),
        ("notification.updated", 4),
    ]
    assert replayed[3]["data"] == {"ids": [nid], "deleted": True}


def test_a_slow_connection_is_closed_with_resync_and_others_are_untouched():
    slow, fine = Connection("u", 10), Connection("v", 10)
    for i in range(11):
        slow.offer({"type": "notification.created", "cursor": i + 1})
    fine.offer({"type": "notification.created", "cursor": 1})

    assert slow.close_code == RESYNC and slow.queue.qsize() == 1
    assert fine.close_code is None and fine.queue.qsize() == 1


def test_the_oldest_connection_of_a_user_over_the_cap_is_closed(runtime, pg_url):
    runtime.settings = server_settings(pg_url, stream_max_connections_per_user=2)
    hub = Hub(runtime)
    first, second, third = (hub.register("u") for _ in range(3))

    assert first.close_code == REPLACED
    assert second.close_code is None and third.close_code is None
    assert hub.count() == 2


def test_origins_outside_the_allow_list_are_refused(runtime, pg_url):
    import pytest
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

    from clarion.api.app import create_app
    from clarion.core.auth import issue_user_token

    runtime.settings = server_settings(pg_url, stream_allowed_origins=["https://app.test"])
    token = issue_user_token(runtime.settings, "u")
    with TestClient(create_app(runtime=runtime)) as client:
        url = f"/v1/me/stream?token={token}"
        evil = {"Origin": "https://evil.test"}
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(url, headers=evil),
        ):
            pass
        assert refused.value.status_code == 403
        with client.websocket_connect(url, headers={"Origin": "https://app.test"}) as ws:
            assert ws.receive_json()["type"] == "unread_count"
