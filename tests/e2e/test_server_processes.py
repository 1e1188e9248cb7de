"""Real ``clarion api`` and ``clarion worker`` processes on PostgreSQL and Redis."""

from __future__ import annotations

import signal

import httpx
import pytest
from sqlalchemy import func, select

from clarion.core import enqueue, ledger
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Delivery, Notification
from tests.channels.smtp import SENDER, give_email
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(runtime) -> dict[str, str]:
    """The environment of every process: the test database, Redis DBs 14/15."""
    return process_env(runtime.settings.database_url, CLARION_LOG_LEVEL="WARNING")


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
        assert count == {"total": 0, "by_category": {}, "unseen": 0}
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
        enqueue.prepare(
            NotificationCreate(
                recipients=recipients, category="load", title=f"n{i}", channels=["in_app", "email"]
            )
        )
        for i in range(120)
    ]
    for m in messages:
        enqueue.enqueue(runtime.celery, m)
    total = len(messages) * len(recipients)

    def stored() -> int:
        with runtime.sessions() as s:
            return s.scalar(select(func.count()).select_from(Notification))

    first = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w1.log")
    wait_for(lambda: stored() > 0, 30, "the first worker to start storing", first)
    first.stop(signal.SIGKILL)
    at_kill = stored()
    assert at_kill < total, "the worker finished before it could be killed; enlarge the batch"

    book = ledger.for_app(runtime.celery)

    def all_stored() -> bool:
        # What beat's sweeper does: publish again what the broker lost at the kill (kombu's
        # BRPOP → unacked window). A message that was only slow becomes a no-op task.
        ledger.resend_overdue(runtime.celery, book, older_than=20, max_resends=5, limit=1000)
        return stored() == total

    second = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w2.log")
    try:
        wait_for(all_stored, 90, f"all {total} notifications", second)
    except AssertionError as exc:
        # Say where the rest went: still queued, unacked (awaiting restore), or nowhere.
        broker = runtime.celery.connection_for_write().default_channel.client
        raise AssertionError(
            f"stored {stored()} of {total} (at kill: {at_kill}); create queue "
            f"{broker.llen('create')}, unacked {broker.hlen('unacked')}\n{exc}"
        ) from None
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
        in_inbox = s.scalar(select(func.count()).where(Notification.in_inbox.is_(True)))
    # Every one in the inbox (the notification row is its in-app delivery), one email each.
    assert per_channel == {"email": total} and in_inbox == total


# With synchronous_commit off, PostgreSQL still commits each outcome before answering;
# only its flush to disk is late, which a worker crash does not touch.
@pytest.mark.parametrize("synchronous_commit", ["on", "off"])
def test_a_worker_killed_mid_send_leaves_every_email_sent_exactly_once(
    env, runtime, tmp_path, smtp_server, synchronous_commit
):
    env = {
        **env,
        "CLARION_DELIVERY_SYNCHRONOUS_COMMIT": synchronous_commit,
        # The dead worker's task comes back after 6 s, when the delivery it had claimed
        # (lease 5 s) may be taken over. Every channel's send must fit in the lease, or
        # the worker refuses to start.
        "CLARION_BROKER_VISIBILITY_TIMEOUT": "6",
        "CLARION_BROKER_TRANSPORT_OPTIONS": '{"unacked_restore_interval": 1, '
        '"unacked_restore_throttle": 1}',
        "CLARION_DELIVERY_LEASE_SECONDS": "5",
        "CLARION_SMTP_TIMEOUT": "1",
        "CLARION_WEBHOOK_TIMEOUT_SECONDS": "1",
        "CLARION_CHAT__TIMEOUT": "1",
        "CLARION_SMTP_HOST": "127.0.0.1",
        "CLARION_SMTP_PORT": str(smtp_server.port),
        "CLARION_SMTP_FROM": SENDER,
    }
    recipients = [f"user-{i}" for i in range(60)]
    for r in recipients:
        give_email(runtime, r)
    msg = enqueue.prepare(
        NotificationCreate(recipients=recipients, category="load", title="hi", channels=["email"])
    )
    enqueue.enqueue(runtime.celery, msg)

    first = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w1.log")

    def kill_at_the_20th_mail(seen: int) -> None:
        # The worker dies between MAIL and DATA: that email was claimed, not yet accepted.
        if seen == 20:
            smtp_server.handler.on_mail = None
            first.send_signal(signal.SIGKILL)

    smtp_server.handler.on_mail = kill_at_the_20th_mail
    wait_for(lambda: first.popen.poll() is not None, 60, "the worker to be killed", None)
    assert first.popen.returncode == -signal.SIGKILL, first.output()
    assert len(smtp_server.messages) == 19

    def statuses() -> dict[str, int]:
        with runtime.sessions() as s:
            rows = s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
            return dict(rows.all())

    second = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w2.log")
    try:
        wait_for(lambda: statuses() == {"sent": 60}, 60, "every email sent", second)
    finally:
        second.stop()

    message_ids = [m.message["Message-ID"] for m in smtp_server.messages]
    with runtime.sessions() as s:
        refs = set(s.scalars(select(Delivery.provider_ref)))
    assert len(message_ids) == 60 and set(message_ids) == refs
