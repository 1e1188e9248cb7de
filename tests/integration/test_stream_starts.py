"""Connections starting together are read in batches, and each still gets exactly its own
replay: what it missed after its cursor, once, in order, then the unread count."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from clarion.api.live_hub import Hub
from clarion.core import inbox, replay
from clarion.db.migrate import upgrade
from clarion.db.models import Notification
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.runtime import Runtime
from clarion.settings import Settings
from tests.conftest import server_settings
from tests.integration.test_stream_core import Client, create, publish, until


def changes(runtime, recipient: str, created: list[dict]) -> None:
    """Two inbox changes after the creations: the first one deleted, then all read."""
    with transaction(runtime.sessions) as session:
        first = uuid.UUID(created[0]["data"]["id"])
        inbox.delete(session=session, recipient_id=recipient, id=first, now=utcnow())
    with transaction(runtime.sessions) as session:
        inbox.read_all(session=session, recipient_id=recipient, category=None, now=utcnow())


def statements(runtime) -> list[str]:
    """The SQL statements the runtime's engine runs from now on."""
    seen: list[str] = []
    event.listen(runtime.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_many_connections_resuming_at_once_each_get_exactly_their_own_missed_events(
    runtime, pg_url
):
    runtime.settings = server_settings(pg_url, stream_max_replay=4)
    # 30 recipients with 1..5 notifications; the first ten also have two inbox changes.
    published = {f"r{i}": create(runtime, f"r{i}", 1 + i % 5) for i in range(30)}
    for i in range(10):
        changes(runtime, f"r{i}", published[f"r{i}"])
    with runtime.sessions() as session:
        heads = {r: replay.current_cursor(session=session, recipient_id=r) for r in published}
    assert heads["r0"] == 2 and heads["r1"] == 4 and heads["r10"] == 1  # the changes count
    # Cursors: 0, 1 (past the first), the head (nothing missed), none (fresh), the future;
    # r0 and r1 also connect twice with other cursors.
    asks = [(rid, [0, 1, heads[rid], None, heads[rid] + 5][i % 5]) for i, rid in enumerate(heads)]
    asks += [("r0", 2), ("r1", None)]
    sql = statements(runtime)

    async def scenario():
        hub = Hub(runtime)
        clients = [(rid, since, Client()) for rid, since in asks]
        for rid, since, client in clients:  # all in the same tick, as after a restart
            hub.open(rid, client, since)
        # A live event for r2 while the batch is read: once, whichever comes first.
        late = await asyncio.to_thread(create, runtime, "r2", 1)
        publish(hub, *late)
        await until(lambda: all(any(e["type"] == "unread_count" for e in c.frames)
                                for *_, c in clients))  # fmt: skip
        await until(lambda: any(e["cursor"] == heads["r2"] + 1 for e in clients[2][2].frames))
        await asyncio.sleep(0.1)
        return clients

    clients = asyncio.run(scenario())

    r2, head = clients[2][2].events(), heads["r2"]  # it resumed at its head
    assert r2 in (
        [("unread_count", head), ("notification.created", head + 1)],  # live, after the read
        [("notification.created", head + 1), ("unread_count", head + 1)],  # in the replay
    )
    for rid, since, client in clients[:2] + clients[3:]:
        head, got = heads[rid], client.events()
        if since is None or since > head:  # fresh: live from the head; the future: resync
            want = [] if since is None else [("resync", head)]
            assert got[: len(want) + 1] == [*want, ("unread_count", head)], (rid, since)
        elif head - since > 4:  # more than stream_max_replay: told to refetch
            assert got[:2] == [("resync", head), ("unread_count", head)], (rid, since)
        else:
            replayed = got[: got.index(("unread_count", head))]
            assert [cursor for _, cursor in replayed] == list(range(since + 1, head + 1))
        assert all(e.get("recipient", rid) == rid for e in client.frames)
        cursors = [c for kind, c in got if kind != "unread_count"]
        assert len(cursors) == len(set(cursors)), (rid, since, got)  # nothing twice
    # One batch (four statements), not four per connection (128); the rest is the late
    # create's own reads.
    reads = [s for s in sql if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) <= 40, len(reads)
    assert clients[-1][2].events()[0] == ("unread_count", heads["r1"])
    assert clients[0][2].frames[-1]["data"]["total"] == 0  # r0: all read


@pytest.fixture(params=["postgresql", "sqlite"])
def either(request, runtime, tmp_path):
    """A runtime on PostgreSQL (the test database) or on SQLite (the embedded mode)."""
    if request.param == "postgresql":
        yield runtime
        return
    settings = Settings.embedded(tmp_path)
    upgrade(settings.database_url)
    rt = Runtime(settings)
    yield rt
    rt.close()


def test_batched_starts_answer_as_one_connection_at_a_time_would(either):
    published = {rid: create(either, rid, n) for rid, n in (("a", 3), ("b", 1), ("c", 6))}
    changes(either, "a", published["a"])
    asks = [("a", 0), ("a", 2), ("a", 5), ("a", 9), ("b", 0), ("b", None), ("c", 1), ("z", 0)]

    with either.sessions() as session:
        batch = replay.starts(session=session, asks=asks, limit=4)
    with either.sessions() as session:
        for rid, since in asks:
            head = replay.current_cursor(session=session, recipient_id=rid)
            one = batch[rid, since]
            assert one.head == head
            counts = inbox.unread_event(session=session, recipient_id=rid, cursor=head)["data"]
            assert inbox.counts_data(one.counts) == counts
            if since is None or since > head:
                assert one.replay is None
            else:
                single = replay.replay(session=session, recipient_id=rid, since=since, limit=4)
                assert one.replay == single, (rid, since)
    assert batch["c", 1].replay is None  # 5 missed, over the limit
    assert [e["cursor"] for e in batch["a", 2].replay] == [3, 4, 5]


def test_a_notification_that_expired_since_an_earlier_start_is_not_replayed_or_counted(either):
    create(either, "e", 2)
    with either.sessions() as session:  # a start before: both shown
        first = replay.starts(session=session, asks=[("e", 0)], limit=4)["e", 0]
    assert [e["cursor"] for e in first.replay] == [1, 2] and first.counts.total == 2
    with transaction(either.sessions) as session:  # the first expires 0.2 s from now
        row = session.scalars(select(Notification).filter_by(recipient_id="e", seq=1)).one()
        row.expires_at = utcnow() + timedelta(seconds=0.2)
    time.sleep(0.3)

    with either.sessions() as session:
        later = replay.starts(session=session, asks=[("e", 0)], limit=4)["e", 0]

    assert [e["cursor"] for e in later.replay] == [2]
    assert later.counts.total == 1


def test_a_resume_past_the_replay_limit_in_a_batch_says_resync(runtime, pg_url):
    create(runtime, "u", 6)
    runtime.settings = server_settings(pg_url, stream_max_replay=3)

    async def scenario():
        hub, far, near = Hub(runtime), Client(), Client()
        hub.open("u", far, 1)
        hub.open("u", near, 4)
        await until(lambda: len(far.frames) == 2 and len(near.frames) == 3)
        return far.events(), near.events()

    far, near = asyncio.run(scenario())

    assert far == [("resync", 6), ("unread_count", 6)]
    assert near == [("notification.created", 5), ("notification.created", 6), ("unread_count", 6)]


def test_a_batch_refuses_the_connects_over_their_limit_and_reads_only_the_others(runtime):
    from clarion.api import live_starts
    from clarion.core.ratelimits import Refusal

    create(runtime, "ada", 1)
    create(runtime, "bob", 1)
    asks = [("ada", 0, "1/minute"), ("ada", 0, "1/minute"), ("bob", 0, None)]

    first, refused, uncounted = live_starts.starts(runtime, asks)

    assert isinstance(refused, Refusal) and refused.name == "stream-connect"
    assert [e["cursor"] for e in first.replay] == [1] == [e["cursor"] for e in uncounted.replay]


def test_a_batch_with_the_counters_unreachable_fails_only_the_counted_connects(runtime):
    from types import SimpleNamespace

    from clarion.api import live_starts
    from clarion.core.ratelimits import LimitsUnavailable

    class Down:
        def hit_each(self, checks):
            raise LimitsUnavailable("stream-connect")

    create(runtime, "cyd", 1)
    broken = SimpleNamespace(limits=Down(), sessions=runtime.sessions, settings=runtime.settings)

    counted, uncounted = live_starts.starts(broken, [("cyd", 0, "5/minute"), ("cyd", 0, None)])

    assert isinstance(counted, LimitsUnavailable)  # the WebSocket answers 503 (routers/live.py)
    assert [e["cursor"] for e in uncounted.replay] == [1]
