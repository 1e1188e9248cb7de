"""Guarantees of the create step on PostgreSQL: idempotent, deduplicated, ordered, durable."""

from __future__ import annotations

import uuid

import pytest
import redis
from sqlalchemy import func, select

from clarion.core import enqueue
from clarion.core.create import create_notifications
from clarion.core.pubsub import decode
from clarion.core.schemas import NotificationCreate
from clarion.db import subscribers
from clarion.db.models import Delivery, Notification, Subscriber
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.runtime import Runtime
from tests.broker import drain, queued
from tests.conftest import server_settings
from tests.threads import run_concurrently


@pytest.fixture
def mail_runtime(runtime: Runtime, pg_url: str) -> Runtime:
    """The runtime with an email relay configured (never reached: tests count queued tasks)."""
    runtime.settings = server_settings(
        pg_url, smtp={"host": "127.0.0.1", "port": 1, "sender": "noreply@example.com"}
    )
    runtime.__dict__.pop("channels", None)
    return runtime


def with_email(runtime: Runtime, *ids: str) -> None:
    with transaction(runtime.sessions) as session:
        for i in ids:
            subscribers.upsert(
                session=session, id=i, profile={"email": f"{i}@example.com"}, now=utcnow()
            )


def message(recipients, **fields):
    request = NotificationCreate(recipients=recipients, category="x", title="t", **fields)
    return enqueue.prepare(request)


def run_create(runtime: Runtime, msg) -> None:
    create_notifications([msg], **runtime.pipeline.kwargs())


def create_concurrently(runtime: Runtime, batches: list[list]) -> list[BaseException]:
    """Run each batch of messages on its own thread; return the errors raised."""

    def run_batch(batch):
        for m in batch:
            run_create(runtime, m)

    return run_concurrently(run_batch, batches)


def counts(runtime: Runtime) -> tuple[int, int]:
    """(notifications, stored deliveries): the in-app delivery is the notification row."""
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(Notification)), s.scalar(
            select(func.count()).select_from(Delivery)
        )


def test_the_same_create_message_delivered_twice_creates_nothing_twice(runtime):
    msg = message(["a", "b"], channels=["in_app", "email"])
    enqueue.enqueue(runtime.celery, msg)
    enqueue.enqueue(runtime.celery, msg)  # the broker redelivered it, or the producer retried

    drain(runtime.celery)

    assert counts(runtime) == (2, 2)  # two notifications, their two email deliveries


def test_a_rerun_dispatches_deliveries_the_first_run_left_pending(mail_runtime):
    runtime = mail_runtime
    with_email(runtime, "a")
    msg = message(["a"], channels=["in_app", "email"])

    class LostDispatch:
        def deliver(self, channel, ids, lane):
            pass  # the process died between commit and enqueue

    create_notifications(
        [msg],
        sessions=runtime.sessions,
        settings=runtime.settings,
        publisher=runtime.pubsub,
        dispatcher=LostDispatch(),
        channels=runtime.channels,
    )
    run_create(runtime, msg)

    assert queued(runtime.celery, "deliver.email") == 1


def test_one_task_carrying_several_requests_keeps_dedupe_and_sequences(mail_runtime):
    runtime = mail_runtime
    with_email(runtime, "x")
    a = message(["x", "y"], dedupe_key="k")
    b = message(["x"], dedupe_key="k")  # same key, same recipient, same task: skipped
    c = message(["x"], channels=["in_app", "email"])
    enqueue.enqueue(runtime.celery, a, b, c)

    assert drain(runtime.celery, names=("create",)) == 1
    assert queued(runtime.celery, "deliver.email") == 1

    with runtime.sessions() as s:
        rows = s.execute(
            select(Notification.recipient_id, Notification.seq, Notification.request_id).order_by(
                Notification.recipient_id, Notification.seq
            )
        ).all()
    assert rows == [("x", 1, a.request_id), ("x", 2, c.request_id), ("y", 1, a.request_id)]
    assert counts(runtime) == (3, 1)  # c's email delivery


def test_dedupe_key_allows_one_notification_per_recipient(runtime):
    run_create(runtime, message(["a", "b"], dedupe_key="link-1:expiring"))
    run_create(runtime, message(["a", "b", "c"], dedupe_key="link-1:expiring"))
    run_create(runtime, message(["a"], dedupe_key="link-2:expiring"))

    with runtime.sessions() as s:
        pairs = sorted(s.execute(select(Notification.recipient_id, Notification.dedupe_key)))
    assert pairs == [
        ("a", "link-1:expiring"),
        ("a", "link-2:expiring"),
        ("b", "link-1:expiring"),
        ("c", "link-1:expiring"),
    ]


def test_concurrent_creates_give_each_recipient_a_gapless_sequence(runtime):
    recipients = ["r1", "r2", "r3"]
    messages = [message(recipients) for _ in range(30)]
    assert create_concurrently(runtime, [messages[i::3] for i in range(3)]) == []
    with runtime.sessions() as s:
        for r in recipients:
            seqs = s.scalars(
                select(Notification.seq)
                .where(Notification.recipient_id == r)
                .order_by(Notification.seq)
            ).all()
            assert seqs == list(range(1, 31))


def test_numbers_reserved_for_skipped_items_are_given_back(runtime):
    # create reserves one number per item before it knows what a rerun or a dedupe key
    # skips: the sequence after such runs must still have no gap.
    first = message(["a", "b"])
    run_create(runtime, first)
    run_create(runtime, first)  # a rerun: nothing new
    run_create(runtime, message(["a"], dedupe_key="k"))
    run_create(runtime, message(["a", "b"], dedupe_key="k"))  # only b is new
    run_create(runtime, message(["a"]))

    with runtime.sessions() as s:
        rows = s.execute(
            select(Notification.recipient_id, Notification.seq).order_by(
                Notification.recipient_id, Notification.seq
            )
        ).all()
        stored = dict(s.execute(select(Subscriber.id, Subscriber.seq)).all())
    assert rows == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    assert stored == {"a": 3, "b": 2}


def test_a_batch_stored_again_stores_nothing_twice_and_leaves_no_gap(runtime):
    # A fan-out's batch goes by COPY without looking its ids up first: when the broker
    # delivers it again, the insert fails on the stored ids and the run is redone looking.
    from clarion.db import bulk

    recipients = [f"fan-{i:03d}" for i in range(bulk.COPY_MIN_ROWS + 8)]
    batch = message(recipients)
    run_create(runtime, batch)
    run_create(runtime, batch)  # redelivered
    new = message(recipients[:2])
    create_notifications([batch, new], **runtime.pipeline.kwargs())  # with a new request

    with runtime.sessions() as s:
        rows = s.execute(select(Notification.recipient_id, Notification.seq)).all()
        stored = dict(s.execute(select(Subscriber.id, Subscriber.seq)).all())
    expected = {(r, 1) for r in recipients} | {(r, 2) for r in recipients[:2]}
    assert sorted(rows) == sorted(expected)
    assert stored == {r: 2 if r in recipients[:2] else 1 for r in recipients}


def test_one_batch_run_twice_at_once_is_stored_once_in_order(runtime):
    recipients = [f"twice-{i:03d}" for i in range(100)]
    batches = [message(recipients) for _ in range(3)]
    # Each thread runs every batch: the second run of each waits for the first one's locks.
    assert create_concurrently(runtime, [batches, batches]) == []
    with runtime.sessions() as s:
        for r in (recipients[0], recipients[-1]):
            rows = s.execute(
                select(Notification.seq, Notification.request_id)
                .where(Notification.recipient_id == r)
                .order_by(Notification.seq)
            ).all()
            assert [seq for seq, _ in rows] == [1, 2, 3]
            assert {request for _, request in rows} == {b.request_id for b in batches}
    assert counts(runtime) == (300, 0)


def test_concurrent_creates_for_new_recipients_in_opposite_orders_do_not_deadlock(runtime):
    names = [f"new-{i}" for i in range(200)]
    forward = [message(names) for _ in range(5)]
    backward = [message(list(reversed(names))) for _ in range(5)]
    assert create_concurrently(runtime, [forward, backward]) == []
    assert counts(runtime)[0] == 2000


def test_created_events_are_published_after_commit(runtime):
    pubsub = redis.Redis.from_url(runtime.settings.redis_url).pubsub()
    pubsub.subscribe(runtime.pubsub.channel)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    msg = message(["a", "b"])

    run_create(runtime, msg)
    run_create(runtime, msg)  # a rerun announces nothing new

    events = []
    while (m := pubsub.get_message(timeout=0.5)) is not None:
        events += decode(m["data"])
    assert [(e["type"], e["recipient"], e["cursor"]) for e in events] == [
        ("notification.created", "a", 1),
        ("notification.created", "b", 1),
    ]
    assert {e["data"]["id"] for e in events} == {str(i) for i, _ in msg.items}


def test_deployments_on_other_redis_databases_do_not_hear_each_other(runtime):
    from clarion.core.pubsub import RedisPubSub

    ours = RedisPubSub(runtime.settings.redis_url)
    other_db = 3 if not runtime.settings.redis_url.endswith("/3") else 4
    theirs = RedisPubSub(f"{runtime.settings.redis_url.rsplit('/', 1)[0]}/{other_db}")
    listener = redis.Redis.from_url(runtime.settings.redis_url).pubsub()
    listener.subscribe(ours.channel)
    listener.get_message(timeout=1)

    theirs.publish_many([{"type": "notification.created", "recipient": "x"}])
    ours.publish_many([{"type": "notification.created", "recipient": "y"}])

    got = [
        e["recipient"]
        for m in iter(lambda: listener.get_message(timeout=0.5), None)
        for e in decode(m["data"])
    ]
    assert got == ["y"]


def test_broker_down_is_503_with_retry_after_and_the_key_stays_usable(
    client, runtime, producer, pg_url
):
    from clarion.runtime import Runtime as R
    from tests.conftest import server_settings

    good_celery = runtime.celery
    broken = R(
        server_settings(pg_url, broker_url="redis://127.0.0.1:1/0", broker_publish_timeout=1)
    )
    runtime.__dict__["celery"] = broken.celery
    headers = {**producer, "Idempotency-Key": "during-outage"}
    payload = {"recipients": ["a"], "category": "x", "title": "t"}

    down = client.post("/v1/notifications", json=payload, headers=headers)

    assert down.status_code == 503
    assert down.headers["retry-after"]
    assert down.json()["type"] == "urn:clarion:problem:broker-unavailable"
    runtime.__dict__["celery"] = good_celery
    up = client.post("/v1/notifications", json=payload, headers=headers)
    assert up.status_code == 202
    assert queued(runtime.celery) == 1
    broken.close()


def test_readyz_reports_database_and_broker(client, runtime, pg_url):
    from clarion.runtime import Runtime as R
    from tests.conftest import server_settings

    assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}
    broken = R(
        server_settings(pg_url, broker_url="redis://127.0.0.1:1/0", broker_publish_timeout=1)
    )
    runtime.__dict__["celery"] = broken.celery
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")
    assert client.get("/healthz").status_code == 200


def test_migrations_match_the_models(runtime):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from clarion.db.models import Base

    with runtime.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_enqueue_from_a_producers_own_celery_app(runtime):
    from celery import Celery

    import clarion

    theirs = Celery("producer", broker=runtime.settings.broker_url, set_as_current=False)
    accepted = clarion.enqueue(theirs, recipients=["a"], category="x", title="from celery")
    drain(runtime.celery)

    with runtime.sessions() as s:
        row = s.get(Notification, accepted.notifications[0].id)
    assert row is not None and row.title == "from celery"
    assert isinstance(accepted.request_id, uuid.UUID)


def test_errors_of_statements_sent_around_sqlalchemy_are_sqlalchemy_errors(runtime):
    # The create task retries on SQLAlchemy's DBAPIError; the pipelined statements and the
    # bulk inserts run on the driver, and a bare psycopg error would fail the task for good.
    from sqlalchemy.exc import DataError, IntegrityError

    from clarion.db import bulk, roundtrip

    with runtime.sessions() as s, s.begin(), pytest.raises(DataError):
        roundtrip.together(s, roundtrip.Query("SELECT 1 / %(zero)s", {"zero": 0}, list))
    msg = message(["a"])
    run_create(runtime, msg)
    with runtime.sessions() as s:
        row = s.get(Notification, msg.items[0][0])
        copy = {c.key: getattr(row, c.key) for c in Notification.__mapper__.column_attrs}
    with runtime.sessions() as s, s.begin(), pytest.raises(IntegrityError):
        bulk.insert_tables(session=s, tables=[(Notification, [copy])])


def test_a_batch_big_enough_for_copy_stores_each_rows_metadata_exactly(runtime):
    # Above bulk.COPY_MIN_ROWS the rows go by COPY, with the batch's shared metadata object
    # encoded to JSON text once: COPY's own escaping must keep every byte of it.
    from clarion.db import bulk

    metadata = {"quote": 'a"b', "tab": "a\tb", "backslash": "a\\b", "line": "a\nb",
                "unicode": "Привет ✓", "nested": {"list": [1, 2.5, None, True]}}  # fmt: skip
    recipients = [f"meta-{i}" for i in range(bulk.COPY_MIN_ROWS + 8)]
    run_create(runtime, message(recipients, metadata=metadata))

    with runtime.sessions() as s:
        stored = s.scalars(
            select(Notification.meta).where(Notification.recipient_id.in_(recipients))
        )
        assert list(stored) == [metadata] * len(recipients)


def test_a_copy_batch_stores_every_rows_own_values_and_the_shared_ones(runtime):
    # COPY's text is built with the values the rows share written once (db/copytext.py):
    # two requests in one batch share nothing but their rows, and recipient ids carry
    # every character COPY's text format escapes.
    from clarion.db import bulk

    odd = ["tab\tid", "back\\slash", "new\nline", "cr\rid", "\b\v\f", "Привет ✓", "\\N"]
    first = [f"copy-{i}" for i in range(bulk.COPY_MIN_ROWS)] + odd
    second = [f"other-{i}" for i in range(bulk.COPY_MIN_ROWS)] + odd
    one = enqueue.prepare(
        NotificationCreate(recipients=first, category="x", title="a\tb", metadata={"k": "v\\"})
    )
    two = enqueue.prepare(
        NotificationCreate(recipients=second, category="x", title="c", body="b\nc", severity="high")
    )
    create_notifications([one, two], **runtime.pipeline.kwargs())

    with runtime.sessions() as s:
        stored = {
            r.id: (r.recipient_id, r.title, r.body, r.severity, r.meta, r.created_at, r.in_inbox)
            for r in s.scalars(select(Notification))
        }
        seqs = {row.id: row.seq for row in s.execute(select(Subscriber.id, Subscriber.seq))}
    assert stored == {
        nid: (r, "a\tb", None, "medium", {"k": "v\\"}, one.accepted_at, True)
        for nid, r in one.items
    } | {nid: (r, "c", "b\nc", "high", {}, two.accepted_at, True) for nid, r in two.items}
    assert {r: seqs[r] for r in odd} == dict.fromkeys(odd, 2)


def test_a_copy_batch_stores_every_column_type_as_sent(mail_runtime):
    # COPY goes in binary (each value by its column's type): uuids, integers, booleans,
    # times with their zone, JSON objects and lists, and the deliveries' own table.
    from datetime import timedelta

    from clarion.db import bulk

    recipients = [f"typed-{i}" for i in range(bulk.COPY_MIN_ROWS + 8)]
    with_email(mail_runtime, *recipients)
    expires = utcnow() + timedelta(days=2)
    actions = [{"id": "ok", "label": "OK", "url": "https://example.com/ok"}]
    msg = message(
        recipients,
        channels=["in_app", "email"],
        body="b",
        url="https://example.com/x",
        metadata={"n": 1, "list": [1.5, None, True]},
        actions=actions,
        expires_at=expires,
        collapse_key="k",
    )
    run_create(mail_runtime, msg)

    with mail_runtime.sessions() as s:
        rows = s.scalars(select(Notification).where(Notification.request_id == msg.request_id))
        stored = {
            r.id: (r.recipient_id, r.seq, r.url, r.meta, r.actions, r.expires_at, r.created_at,
                   r.in_inbox, r.collapse_key)
            for r in rows
        }  # fmt: skip
        sent = {
            (d.notification_id, d.channel, d.status, d.attempts)
            for d in s.scalars(select(Delivery))
        }
    assert stored == {
        nid: (r, 1, "https://example.com/x", {"n": 1, "list": [1.5, None, True]},
              [{**actions[0], "clicked_at": None}], expires, msg.accepted_at, True, "k")
        for nid, r in msg.items
    }  # fmt: skip
    assert sent == {(nid, "email", "pending", 0) for nid, _ in msg.items}


def test_create_writes_its_rows_on_the_driver_not_through_the_orm_fallback(runtime, monkeypatch):
    # bulk.insert_tables falls back to one ORM INSERT per table when a row leaves out a
    # column with a Python-side default (COPY knows only the server's): a new column with
    # one would quietly slow every create down.
    from clarion.db import bulk

    real, checked = bulk._copyable, []

    def spy(model, rows):
        columns = real(model, rows)
        checked.append((model.__tablename__, columns is not None))
        return columns

    monkeypatch.setattr(bulk, "_copyable", spy)
    actions = [{"id": "ok", "label": "OK"}]
    run_create(runtime, message(["a", "b"], channels=["in_app", "email"], actions=actions))

    assert checked == [("notifications", True), ("deliveries", True)]
