"""Real ``clarion api`` and ``clarion worker`` processes on PostgreSQL and Redis."""

from __future__ import annotations

import signal

import httpx
import pytest
from sqlalchemy import func, select

from clarion.core import send
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Delivery, Notification
from tests.conftest import BROKER_DB, PUBSUB_DB, REDIS, SECRET
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(runtime) -> dict[str, str]:
    """The environment of every process: the test database, Redis DBs 14/15."""
    return {
        "CLARION_DATABASE_URL": runtime.settings.database_url,
        "CLARION_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CLARION_REDIS_URL": f"{REDIS}/{PUBSUB_DB}",
        "CLARION_SECRET_KEY": SECRET,
        "CLARION_LOG_LEVEL": "WARNING",
    }


def test_send_through_the_api_process_lands_in_the_inbox_via_a_worker(env, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = run(["keys", "create", "e2e", "--scope", "notify"], env).strip().splitlines()[-1]
    token = run(["token", "alice"], env).strip()
    worker = Proc(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_ready(base, api)
        sent = httpx.post(
            f"{base}/v1/notifications",
            json={"recipients": ["alice", "bob"], "category": "links", "title": "Expiring"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert sent.status_code == 202
        nid = sent.json()["notifications"][0]["id"]
        me = {"Authorization": f"Bearer {token}"}

        def arrived() -> bool:
            items = httpx.get(f"{base}/v1/me/notifications", headers=me).json()["items"]
            return [i["id"] for i in items] == [nid]

        wait_for(arrived, 20, "notification in the inbox", worker)
        read = httpx.patch(f"{base}/v1/me/notifications/{nid}", json={"read": True}, headers=me)
        assert read.status_code == 200
        count = httpx.get(f"{base}/v1/me/notifications/unread-count", headers=me).json()
        assert count == {"total": 0, "by_category": {}}
    finally:
        api.stop()
        worker.stop()


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(env, runtime, tmp_path):
    env = {
        **env,
        # Redeliver a dead worker's unacked messages after 3 s, checked every second.
        "CLARION_BROKER_VISIBILITY_TIMEOUT": "3",
        "CLARION_BROKER_TRANSPORT_OPTIONS": '{"unacked_restore_interval": 1, '
        '"unacked_restore_throttle": 1}',
    }
    recipients = [f"user-{i}" for i in range(50)]
    messages = [
        send.prepare(
            NotificationCreate(
                recipients=recipients, category="load", title=f"n{i}", channels=["in_app", "email"]
            )
        )
        for i in range(120)
    ]
    for m in messages:
        send.enqueue(runtime.celery, m)
    total = len(messages) * len(recipients)

    def stored() -> int:
        with runtime.sessions() as s:
            return s.scalar(select(func.count()).select_from(Notification))

    first = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w1.log")
    wait_for(lambda: stored() > 0, 30, "the first worker to start storing", first)
    first.stop(signal.SIGKILL)
    at_kill = stored()
    assert at_kill < total, "the worker finished before it could be killed; enlarge the batch"

    second = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w2.log")
    try:
        wait_for(lambda: stored() == total, 90, f"all {total} notifications", second)
    finally:
        second.stop()

    with runtime.sessions() as s:
        ids = set(s.scalars(select(Notification.id)))
        assert ids == {nid for m in messages for nid, _ in m.items}
        # Each recipient got exactly one notification per message, numbered 1..120 with no
        # gap: no run committed anything twice and no half-done run left a trace.
        for r in ("user-0", "user-49"):
            seqs = s.scalars(
                select(Notification.seq)
                .where(Notification.recipient_id == r)
                .order_by(Notification.seq)
            ).all()
            assert seqs == list(range(1, len(messages) + 1))
        per_channel = dict(
            s.execute(select(Delivery.channel, func.count()).group_by(Delivery.channel)).all()
        )
    assert per_channel == {"in_app": total, "email": total}
