"""The gateway's ordering guarantees on PostgreSQL, with events forced out of order."""

from __future__ import annotations

import asyncio
import json

from clarion.api.live_hub import REPLACED, RESUME, RESYNC, Hub
from clarion.core import enqueue, replay
from clarion.core.create import create_notifications
from clarion.core.pubsub import encode
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
        msg = enqueue.prepare(
            NotificationCreate(recipients=[recipient], category="x", title=f"n{i}")
        )
        create_notifications(
            [msg],
            sessions=runtime.sessions,
            settings=runtime.settings,
            publisher=captured,
            dispatcher=runtime,
            channels=runtime.channels,
        )
    return captured.events


class Client:
    """A connection's ASGI ``send`` that records frames; ``full()`` makes it stop taking
    data, as uvicorn's send waits while the transport paused writing."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.close_code: int | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    async def __call__(self, message: dict) -> None:
        if message["type"] == "websocket.close":
            self.close_code = message["code"]
        await self.writable.wait()
        if message["type"] == "websocket.send":
            self.frames.append(json.loads(message["text"]))

    def events(self) -> list[tuple[str, int]]:
        return [(e["type"], e["cursor"]) for e in self.frames if e["type"] != "heartbeat"]


async def until(check, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def publish(hub: Hub, *events: dict) -> None:
    """Each event as its own pub/sub message, in the order given (a race between workers)."""
    for event in events:
        for message in encode([event]):
            hub.dispatch(message)


def test_live_events_arriving_out_of_order_are_delivered_in_order_without_gaps(runtime):
    async def scenario():
        hub, client = Hub(runtime), Client()
        conn = hub.open("u", client, None)  # live from the current cursor (0)
        await until(lambda: client.events() == [("unread_count", 0)])
        published = await asyncio.to_thread(create, runtime, "u", 3)  # seq 1, 2, 3
        # The publishes raced: 3 arrives first, then 1 twice (a duplicate); 2 never does.
        publish(hub, published[2], published[0], published[0])
        publish(hub, {"type": "notification.created", "recipient": "u", "cursor": 3})
        await until(lambda: len(client.events()) == 4)
        await asyncio.sleep(0.2)  # the late and duplicate copies are not sent again
        return client, conn

    client, conn = asyncio.run(scenario())

    assert client.events()[1:] == [("notification.created", n) for n in (1, 2, 3)]
    assert [e["data"]["title"] for e in client.frames[1:]] == ["n0", "n1", "n2"]
    assert conn.pending is None and conn.task is None  # back on the fast path


def test_the_next_event_is_sent_by_the_hub_itself_as_published(runtime):
    async def scenario():
        hub, client = Hub(runtime), Client()
        conn = hub.open("u", client, None)
        await until(lambda: conn.task is None and len(client.frames) == 1)
        [event] = await asyncio.to_thread(create, runtime, "u", 1)
        [message] = encode([event])
        hub.dispatch(message)  # no await: the frame is out before dispatch returns
        return client, conn, event

    client, conn, event = asyncio.run(scenario())

    assert client.frames[1] == json.loads(json.dumps(event, default=str))
    assert conn.task is None and conn.cursor == 1


def test_a_resume_too_far_back_says_resync_with_the_current_cursor(runtime, pg_url):
    create(runtime, "u", 5)
    runtime.settings = server_settings(pg_url, stream_max_replay=2)

    async def scenario():
        client = Client()
        Hub(runtime).open("u", client, 0)
        await until(lambda: len(client.frames) == 2)
        return client.frames

    got = asyncio.run(scenario())

    assert got[0] == {"type": "resync", "reason": "gap too large: refetch the inbox", "cursor": 5}
    assert got[1]["type"] == "unread_count" and got[1]["data"]["total"] == 5


def test_a_resume_message_replays_from_the_given_cursor(runtime):
    create(runtime, "u", 3)

    async def scenario():
        client = Client()
        conn = Hub(runtime).open("u", client, None)
        conn.control(RESUME, 1)
        await until(lambda: len(client.frames) == 3)
        return client.events()

    assert asyncio.run(scenario()) == [
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
        replayed = replay.replay(session=s, recipient_id="u", since=0, limit=10)

    assert [(e["type"], e["cursor"]) for e in replayed] == [
        ("notification.created", 1),
        ("notification.created", 2),
        ("notification.updated", 3),
        ("notification.updated", 4),
    ]
    assert replayed[3]["data"] == {"ids": [nid], "deleted": True}


def test_a_slow_client_is_closed_with_resync_and_does_not_delay_another(runtime, pg_url):
    runtime.settings = server_settings(pg_url, stream_buffer_events=10)

    async def scenario():
        hub, slow, fine = Hub(runtime), Client(), Client()
        hub.open("u", slow, None)
        hub.open("v", fine, None)
        await until(lambda: len(slow.frames) == len(fine.frames) == 1)
        slow.writable.clear()  # its transport stops taking data
        for cursor in range(1, 13):
            publish(hub, *({"type": "notification.created", "recipient": r, "cursor": cursor}
                           for r in ("u", "v")))  # fmt: skip
        fine_got = list(fine.events())  # no await yet: the hub did not wait for "u"
        await until(lambda: slow.close_code is not None)
        return slow, fine_got

    slow, fine_got = asyncio.run(scenario())

    assert fine_got[1:] == [("notification.created", n) for n in range(1, 13)]
    assert slow.close_code == RESYNC
    assert slow.events() == [("unread_count", 0)]


def test_idle_connections_get_heartbeats_with_their_cursor(runtime, pg_url):
    runtime.settings = server_settings(pg_url, stream_heartbeat_seconds=0.2)

    async def scenario():
        hub, client = Hub(runtime), Client()
        hub.start()
        try:
            hub.open("u", client, None)
            await asyncio.sleep(1.0)  # ticks every 0.1 s: a heartbeat every 0.2 s
        finally:
            await hub.stop()
        return [e for e in client.frames if e["type"] == "heartbeat"]

    beats = asyncio.run(scenario())

    assert 3 <= len(beats) <= 5  # one per interval, not one per tick
    assert all(b == {"type": "heartbeat", "cursor": 0} for b in beats)


def test_the_oldest_connection_of_a_user_over_the_cap_is_closed(runtime, pg_url):
    runtime.settings = server_settings(pg_url, stream_max_connections_per_user=2)

    async def scenario():
        hub = Hub(runtime)
        clients = [Client() for _ in range(3)]
        for client in clients:
            hub.open("u", client, None)
        return hub, clients

    hub, (first, second, third) = asyncio.run(scenario())

    assert first.close_code == REPLACED
    assert second.close_code is None and third.close_code is None
    assert hub.count() == 2


def test_origins_outside_the_allow_list_and_bad_cursors_are_refused(runtime, pg_url):
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
        with (
            pytest.raises(WebSocketDenialResponse) as invalid,
            client.websocket_connect(f"{url}&since=-1"),
        ):
            pass
        assert invalid.value.status_code == 422
        with client.websocket_connect(url, headers={"Origin": "https://app.test"}) as ws:
            assert ws.receive_json()["type"] == "unread_count"


def test_any_subscriber_id_survives_the_wire_format(runtime):
    odd = 'tab\there, newline\nthere, "quoted" é'  # ids are free-form strings

    async def scenario():
        hub, client = Hub(runtime), Client()
        hub.open(odd, client, None)
        await until(lambda: len(client.frames) == 1)
        event = {"type": "notification.created", "recipient": odd, "cursor": 1, "data": {}}
        publish(hub, event, {**event, "recipient": "someone else", "cursor": 2})
        return client.frames[1:], event

    got, event = asyncio.run(scenario())

    assert got == [event]


def test_events_published_while_a_connect_is_counted_and_read_are_not_missed(runtime):
    # A connection is registered (held) before its connect is counted and its start read,
    # and accepted after: what is published in between reaches it once, after its replay.
    async def scenario():
        hub, client = Hub(runtime), Client()
        await asyncio.to_thread(create, runtime, "u", 1)  # seq 1, before the connect
        conn = hub.hold("u", client)
        start = await hub.starts.get(("u", 0, "100/minute"))
        late = await asyncio.to_thread(create, runtime, "u", 2)  # seq 2, 3: after the read
        publish(hub, *late)
        assert client.frames == []  # nothing before the accept
        hub.begin(conn, 0, None, start)
        await until(lambda: len(client.events()) == 4)
        await asyncio.sleep(0.1)
        return client

    client = asyncio.run(scenario())

    created = [("notification.created", n) for n in (1, 2, 3)]
    assert client.events() == [*created[:1], ("unread_count", 1), *created[1:]]


def test_a_connect_refused_while_held_does_not_count_against_the_cap(runtime, pg_url):
    runtime.settings = server_settings(pg_url, stream_max_connections_per_user=2)

    async def scenario():
        hub = Hub(runtime)
        first, second, refused, new = (Client() for _ in range(4))
        hub.open("u", first, None)
        hub.open("u", second, None)
        held = hub.hold("u", refused)  # to be refused: it must not close anyone
        conn = hub.hold("u", new)
        hub.begin(conn, None)
        hub.unregister(held)
        await until(lambda: len(new.frames) == 1)
        return hub, first, second, refused

    hub, first, second, refused = asyncio.run(scenario())

    assert first.close_code == REPLACED  # only the oldest, for the new one
    assert second.close_code is None and refused.close_code is None and refused.frames == []
    assert hub.count() == 2
