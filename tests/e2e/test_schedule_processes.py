"""A real ``clarion beat`` and ``clarion worker`` pair releasing a scheduled notification."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clarion.core import enqueue
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Notification, ScheduledNotification
from clarion.ids import as_utc, utcnow
from tests.conftest import process_env
from tests.e2e.procs import Proc, wait_for

pytestmark = pytest.mark.e2e

INTERVAL = 1.0


@pytest.fixture
def env(runtime) -> dict[str, str]:
    return process_env(
        runtime.settings.database_url,
        CLARION_LOG_LEVEL="WARNING",
        CLARION_SCHEDULE_INTERVAL_SECONDS=str(INTERVAL),
    )


def enqueue_one(runtime, **fields):
    msg = enqueue.prepare(NotificationCreate(recipients=["alice"], category="meetings", **fields))
    enqueue.enqueue(runtime.celery, msg)
    return msg.items[0][0]


def test_beat_and_a_worker_release_a_scheduled_notification_on_time(env, runtime, tmp_path):
    worker = Proc(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
    beat = Proc(["beat", "--schedule", str(tmp_path / "beat-schedule")], env, tmp_path / "beat.log")
    try:

        def stored(model, nid) -> bool:
            with runtime.sessions() as s:
                return s.get(model, nid) is not None

        # The worker is up once it has stored an immediate notification.
        warm = enqueue_one(runtime, title="warm-up")
        wait_for(lambda: stored(Notification, warm), 60, "the worker to start", worker)

        send_at = utcnow() + timedelta(seconds=4)
        nid = enqueue_one(runtime, title="Standup in 10 minutes", send_at=send_at)
        wait_for(lambda: stored(ScheduledNotification, nid), 10, "the scheduled row", worker)
        assert utcnow() < send_at and not stored(Notification, nid)

        wait_for(lambda: stored(Notification, nid), 15, "the release", beat)
        with runtime.sessions() as s:
            row = s.get(ScheduledNotification, nid)
            released_at = as_utc(row.updated_at)  # set in the transaction that stored it
            seq = s.get(Notification, nid).seq
        assert row.status == "released" and seq == 2  # after the warm-up, no gap
        # Released at its time, within one beat interval (plus a task's round trip).
        assert send_at <= released_at <= send_at + timedelta(seconds=INTERVAL + 1.5)
    finally:
        beat.stop()
        worker.stop()
