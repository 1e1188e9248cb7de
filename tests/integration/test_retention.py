"""Retention on PostgreSQL: rows past their period are gone, everything else is untouched,
a run is bounded (statement size, time budget) and a second run deletes nothing more."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text

from clarion.core import retention
from clarion.ids import derived_id
from clarion.workers.app import beat_schedule
from tests.conftest import process_env, server_settings
from tests.e2e.procs import CLARION

NOW = datetime.now(UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def made_at(at: datetime) -> uuid.UUID:
    """A UUIDv7 of that time, as the API makes them."""
    return derived_id(uuid.uuid4(), "x", at)


class Rows:
    """Inserts rows straight into the tables, at the ages a test needs."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.seq = 0
        conn.execute(
            text(
                "INSERT INTO subscribers (id, data, seq, created_at, updated_at)"
                " VALUES ('ada', '{}', 0, now(), now())"
            )
        )

    def notification(
        self, *, days: float, category: str = "news", deleted_days: float | None = None
    ) -> uuid.UUID:
        self.seq += 1
        nid = made_at(ago(days))
        self.conn.execute(
            text(
                "INSERT INTO notifications (id, request_id, recipient_id, seq, category,"
                " severity, title, metadata, created_at, deleted_at)"
                " VALUES (:id, :id, 'ada', :seq, :cat, 'low', 't', '{}', :at, :deleted)"
            ),
            {
                "id": nid,
                "seq": self.seq,
                "cat": category,
                "at": ago(days),
                "deleted": None if deleted_days is None else ago(deleted_days),
            },
        )
        return nid

    def delivery(self, nid: uuid.UUID, status: str, *, attempt_days: float | None = None):
        did = uuid.uuid4()
        self.conn.execute(
            text(
                "INSERT INTO deliveries (id, notification_id, channel, target, status,"
                " attempts, created_at, updated_at)"
                " VALUES (:id, :n, 'email', CAST(:id AS text), :s, 1, now(), now())"
            ),
            {"id": did, "n": nid, "s": status},
        )
        if attempt_days is not None:
            self.conn.execute(
                text(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, started_at,"
                    " finished_at, outcome) VALUES (:d, 1, :at, :at, 'sent')"
                ),
                {"d": did, "at": ago(attempt_days)},
            )
        return did

    def inbox_event(self, days: float) -> int:
        self.seq += 1
        self.conn.execute(
            text(
                "INSERT INTO inbox_events (recipient_id, seq, type, data, created_at)"
                " VALUES ('ada', :seq, 'notification.read', '{}', :at)"
            ),
            {"seq": self.seq, "at": ago(days)},
        )
        return self.seq

    def event(self, days: float) -> uuid.UUID:
        eid = uuid.uuid4()  # a producer's own id: not time-ordered
        self.conn.execute(
            text(
                "INSERT INTO events (id, type, data, occurred_at, received_at)"
                " VALUES (:id, 'order.paid', '{}', :at, :at)"
            ),
            {"id": eid, "at": ago(days)},
        )
        return eid

    def rule_run(self, days: float) -> None:
        self.conn.execute(
            text(
                "INSERT INTO rule_runs (rule_key, trigger, started_at, as_of, candidates,"
                " created, duplicates) VALUES ('r', 'beat', :at, :at, 0, 0, 0)"
            ),
            {"at": ago(days)},
        )

    def failed_request(self, days: float) -> uuid.UUID:
        rid = uuid.uuid4()
        self.conn.execute(
            text(
                "INSERT INTO failed_requests (request_id, kind, reason, request, created_at)"
                " VALUES (:r, 'create', 'bad', '{}', :at)"
            ),
            {"r": rid, "at": ago(days)},
        )
        self.conn.execute(
            text("INSERT INTO failed_notifications (id, request_id) VALUES (:id, :r)"),
            {"id": uuid.uuid4(), "r": rid},
        )
        return rid

    def scheduled(self, *, accepted_days: float, status: str, updated_days: float) -> uuid.UUID:
        sid = made_at(ago(accepted_days))
        self.conn.execute(
            text(
                "INSERT INTO scheduled_notifications (id, request_id, recipient_id, send_at,"
                " message, status, created_at, updated_at)"
                " VALUES (:id, :id, 'ada', :send, '{}', :s, :acc, :upd)"
            ),
            {
                "id": sid,
                "send": ago(updated_days),
                "s": status,
                "acc": ago(accepted_days),
                "upd": ago(updated_days),
            },
        )
        return sid

    def fanout(self, *, days: float, status: str) -> uuid.UUID:
        rid = made_at(ago(days))
        self.conn.execute(
            text(
                "INSERT INTO fanouts (request_id, topic, status, total, batches, message,"
                " created_at, finished_at) VALUES (:r, 't', :s, 1, 1, '{}', :at, :fin)"
            ),
            {
                "r": rid,
                "s": status,
                "at": ago(days),
                "fin": ago(days) if status == "enqueued" else None,
            },
        )
        return rid


def ids(conn, query: str) -> set:
    return {r[0] for r in conn.execute(text(query))}


@pytest.fixture
def clean(runtime):
    with runtime.engine.begin() as conn:
        conn.execute(text("TRUNCATE inbox_events, failed_notifications CASCADE"))
    return runtime


def test_rows_past_their_period_go_and_nothing_else(clean, pg_url):
    settings = server_settings(
        pg_url,
        retention_days=180,
        retention_category_days={"security": 730, "chatter": 7, "legal": 0},
    )
    with clean.engine.begin() as conn:
        rows = Rows(conn)
        old_news = rows.notification(days=200)
        sent = rows.delivery(old_news, "sent", attempt_days=200)
        fresh = rows.notification(days=1)
        young_news = rows.notification(days=170)
        old_security = rows.notification(days=200, category="security")
        ancient_security = rows.notification(days=800, category="security")
        old_chatter = rows.notification(days=8, category="chatter")
        legal = rows.notification(days=3000, category="legal")
        kept_for_delivery = {}
        for status in retention.OPEN_DELIVERY:
            nid = rows.notification(days=200)
            rows.delivery(nid, status)
            kept_for_delivery[nid] = status
        finished = rows.notification(days=200)
        rows.delivery(finished, "dead")
        deleted_long_ago = rows.notification(days=50, deleted_days=40)
        deleted_lately = rows.notification(days=50, deleted_days=5)
        on_fresh = rows.notification(days=1)
        rows.delivery(on_fresh, "sent", attempt_days=100)
        recent_attempt = rows.delivery(on_fresh, "failed", attempt_days=10)
        old_change, new_change = rows.inbox_event(100), rows.inbox_event(10)
        old_event, new_event = rows.event(40), rows.event(1)
        rows.rule_run(40)
        rows.rule_run(1)
        old_failure, new_failure = rows.failed_request(40), rows.failed_request(1)
        released = rows.scheduled(accepted_days=45, status="released", updated_days=40)
        cancelled = rows.scheduled(accepted_days=45, status="cancelled", updated_days=40)
        waiting = rows.scheduled(accepted_days=45, status="scheduled", updated_days=-30)
        just_released = rows.scheduled(accepted_days=45, status="released", updated_days=1)
        old_fanout = rows.fanout(days=40, status="enqueued")
        stuck_fanout = rows.fanout(days=40, status="fanning_out")

    report = retention.run(sessions=clean.sessions, settings=settings)
    assert report.done

    with clean.engine.connect() as conn:
        left = ids(conn, "SELECT id FROM notifications")
        assert left == {
            fresh,
            young_news,
            old_security,
            legal,
            deleted_lately,
            on_fresh,
            *kept_for_delivery,
        }
        assert not {old_news, ancient_security, old_chatter, finished, deleted_long_ago} & left
        # The deleted notification's deliveries and attempts went with it.
        assert sent not in ids(conn, "SELECT id FROM deliveries")
        assert {s for (s,) in conn.execute(text("SELECT status FROM deliveries"))} >= set(
            kept_for_delivery.values()
        )
        assert ids(conn, "SELECT delivery_id FROM delivery_attempts") == {recent_attempt}
        assert ids(conn, "SELECT seq FROM inbox_events") == {new_change}
        assert old_change not in ids(conn, "SELECT seq FROM inbox_events")
        assert ids(conn, "SELECT id FROM events") == {new_event}
        assert old_event not in ids(conn, "SELECT id FROM events")
        assert conn.execute(text("SELECT count(*) FROM rule_runs")).scalar() == 1
        assert ids(conn, "SELECT request_id FROM failed_requests") == {new_failure}
        assert ids(conn, "SELECT request_id FROM failed_notifications") == {new_failure}
        assert old_failure not in ids(conn, "SELECT request_id FROM failed_requests")
        assert ids(conn, "SELECT id FROM scheduled_notifications") == {waiting, just_released}
        assert not {released, cancelled} & ids(conn, "SELECT id FROM scheduled_notifications")
        assert ids(conn, "SELECT request_id FROM fanouts") == {stuck_fanout}
        assert old_fanout not in ids(conn, "SELECT request_id FROM fanouts")

    # Idempotent: a second run finds nothing more to delete.
    again = retention.run(sessions=clean.sessions, settings=settings)
    assert again.done and not any(again.deleted.values())


def test_a_run_is_bounded_by_its_batch_and_its_budget(clean, pg_url):
    settings = server_settings(pg_url, retention_days=30, retention_batch=7)
    with clean.engine.begin() as conn:
        rows = Rows(conn)
        old = [rows.notification(days=40 + i / 100) for i in range(40)]
        kept = rows.notification(days=40.5)
        rows.delivery(kept, "pending")  # behind the walk's cursor, never re-deleted

    # No budget: nothing is touched, and the run says it is not done.
    idle = retention.run(sessions=clean.sessions, settings=settings, budget_seconds=0)
    assert not idle.done and not any(idle.deleted.values())

    deleted_per_statement: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM NOTIFICATIONS"):
            deleted_per_statement.append(cursor.rowcount)

    event.listen(clean.engine, "after_cursor_execute", count)
    try:
        report = retention.run(sessions=clean.sessions, settings=settings)
    finally:
        event.remove(clean.engine, "after_cursor_execute", count)
    assert report.done and report.deleted["notifications"] == len(old)
    assert max(deleted_per_statement) <= 7 and sum(deleted_per_statement) == len(old)
    with clean.engine.connect() as conn:
        assert ids(conn, "SELECT id FROM notifications") == {kept}


def test_the_beat_task_runs_it(clean):
    entry = beat_schedule(clean.settings)["retention"]
    assert entry["task"] == "clarion.retention.run"
    assert entry["options"]["queue"] == "periodic"
    with clean.engine.begin() as conn:
        rows = Rows(conn)
        rows.notification(days=181)  # the default period is 180 days
        young = rows.notification(days=179)
    task = clean.celery.tasks["clarion.retention.run"]
    assert task.apply().get()["notifications"] == 1
    with clean.engine.connect() as conn:
        assert ids(conn, "SELECT id FROM notifications") == {young}
    assert task.apply().get()["notifications"] == 0


def test_a_run_that_stops_goes_on_from_there_not_from_the_oldest_row(clean, pg_url):
    # 20 old rows kept (a longer period), then 5 old rows due; 5 rows a statement, two
    # statements a run: walking from the oldest row every run would never reach the 5.
    settings = server_settings(
        pg_url, retention_days=30, retention_category_days={"security": 730}, retention_batch=5
    )
    with clean.engine.begin() as conn:
        rows = Rows(conn)
        kept = [rows.notification(days=60 - i / 100, category="security") for i in range(20)]
        due = [rows.notification(days=50 - i / 100) for i in range(5)]

    runs = [
        retention.run(sessions=clean.sessions, settings=settings, max_batches=2) for _ in range(3)
    ]
    assert [r.deleted["notifications"] for r in runs] == [0, 0, 5]
    assert not runs[0].done and not runs[1].done
    with clean.engine.connect() as conn:
        assert ids(conn, "SELECT id FROM notifications") == set(kept)
        # The walk reached the end: the next cycle starts from the oldest row again.
        assert conn.execute(text("SELECT count(*) FROM retention_cursors")).scalar() == 0
    again = retention.run(sessions=clean.sessions, settings=settings, max_batches=2)
    assert again.deleted["notifications"] == 0 and not set(due) & set(kept)


def test_clarion_retention_runs_it_from_the_command_line(clean, pg_url):
    with clean.engine.begin() as conn:
        rows = Rows(conn)
        rows.notification(days=200)
        young = rows.notification(days=100)
    done = subprocess.run(
        [*CLARION, "retention", "--budget", "60"],
        env={**os.environ, **process_env(pg_url)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["notifications"] == 1 and json.loads(done.stdout)["done"]
    with clean.engine.connect() as conn:
        assert ids(conn, "SELECT id FROM notifications") == {young}
