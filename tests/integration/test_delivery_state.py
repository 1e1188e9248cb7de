"""The delivery state machine: races, leases, parked retries, the sweeper, dead-letter replay."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from clarion.core import deliver, queues, sweeper
from clarion.db import outcomes
from clarion.db.models import AuditEntry, DeadLetter, Delivery, Notification
from clarion.ids import utcnow
from tests.broker import drain, queued
from tests.channels import FAST_RETRY
from tests.channels.smtp import give_email
from tests.conftest import make_key, process_env
from tests.integration.test_email import delivery, notify


@pytest.fixture
def rt(make_runtime, smtp_server):
    return make_runtime(**FAST_RETRY, **smtp_server.settings())


def run_deliver(rt, ids, scheduler=None):
    return deliver.deliver(
        ids,
        channel="email",
        sessions=rt.sessions,
        settings=rt.settings,
        channels=rt.channels,
        scheduler=scheduler or rt,
    )


def pending_email(rt, recipients=("ada",)) -> list:
    for r in recipients:
        give_email(rt, r)
    nids = notify(rt, recipients=recipients)
    drain(rt.celery, names=(queues.CREATE,))
    # The tests run the deliver step themselves: drop the task the create step enqueued.
    rt.celery.connection_for_write().default_channel.client.delete(queues.deliver_queue("email"))
    with rt.sessions() as s:
        return list(s.scalars(select(Delivery.id).where(Delivery.notification_id.in_(nids))))


def test_two_workers_racing_on_the_same_deliveries_send_each_once(make_runtime, smtp_server):
    a = make_runtime(**smtp_server.settings())
    b = make_runtime(**smtp_server.settings())
    ids = pending_email(a, recipients=[f"u{i}" for i in range(20)])
    start = threading.Barrier(2)

    def worker(rt):
        start.wait()
        run_deliver(rt, ids)

    threads = [threading.Thread(target=worker, args=(rt,)) for rt in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ids_seen = [m.message["Message-ID"] for m in smtp_server.messages]
    assert len(ids_seen) == 20 and len(set(ids_seen)) == 20


def test_a_delivery_being_sent_is_not_taken_until_its_lease_expires(rt, smtp_server):
    [did] = pending_email(rt)
    with rt.sessions.begin() as s:  # a worker claimed it, then died
        s.execute(
            update(Delivery)
            .where(Delivery.id == did)
            .values(status="sending", attempts=1, next_attempt_at=utcnow() + timedelta(minutes=5))
        )
    assert run_deliver(rt, [did]).sent == 0
    with rt.sessions.begin() as s:
        s.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=5)))
    assert run_deliver(rt, [did]).sent == 1
    assert len(smtp_server.messages) == 1


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_new_owner(rt, smtp_server):
    [did] = pending_email(rt)
    original = rt.channels.get("email").send

    def slow_send(payload, target):
        # While this send is in flight, the lease runs out and another worker claims it.
        with rt.sessions.begin() as s:
            s.execute(update(Delivery).values(status="sending", attempts=5))
        return original(payload, target)

    rt.channels.get("email").send = slow_send
    result = run_deliver(rt, [did])
    assert result.lost_lease == 1 and result.sent == 0
    with rt.sessions() as s:
        row = s.get(Delivery, did)
    assert (row.status, row.attempts) == ("sending", 5)


class SlowRelay:
    """Each send takes 40 s of a fake clock (the test relay's send timeout is 21 s, the lease
    100 s); ``during(n, rt, unsent)`` runs inside the n-th send."""

    def __init__(self, rt, during=None) -> None:
        self.now, self.sent, self.during = utcnow(), [], during
        self.channel = rt.channels.get("email")
        self.original, self.channel.send = self.channel.send, self.send
        self.rt, self.leases = rt, []

    def send(self, payload, target):
        did = uuid.UUID(payload.message_id[1:].split("@")[0])
        with self.rt.sessions() as s:
            self.leases.append(s.get(Delivery, did).next_attempt_at - self.now)
        self.sent.append(did)
        if self.during:
            self.during(len(self.sent), self)
        self.now += timedelta(seconds=40)
        return self.original(payload, target)


def test_a_send_that_could_outlast_the_lease_renews_the_lease_of_the_rest_first(
    make_runtime, smtp_server
):
    rt = make_runtime(**smtp_server.settings(), delivery_lease_seconds=100)
    ids = pending_email(rt, recipients=["ada", "bob", "cy"])
    relay = SlowRelay(rt)
    result = deliver.deliver(
        ids, channel="email", sessions=rt.sessions, settings=rt.settings,
        channels=rt.channels, scheduler=rt, clock=lambda: relay.now,
    )  # fmt: skip

    assert result.sent == 3 and len(smtp_server.messages) == 3
    # The third send would have started 20 s before the lease's end, less than its
    # timeout: its row's lease was renewed to a full 100 s first.
    assert relay.leases == [timedelta(seconds=s) for s in (100, 60, 100)]


def test_a_row_taken_over_while_the_batch_was_slow_is_not_sent_again(make_runtime, smtp_server):
    rt = make_runtime(**smtp_server.settings(), delivery_lease_seconds=100)
    ids = pending_email(rt, recipients=["ada", "bob", "cy"])

    def take_over_the_rest(n, relay):
        if n == 2:  # another worker claimed the last row (its sweeper saw it due)
            [rest] = set(ids) - set(relay.sent)
            with rt.sessions.begin() as s:
                s.execute(
                    update(Delivery)
                    .where(Delivery.id == rest)
                    .values(attempts=2, next_attempt_at=relay.now + timedelta(seconds=300))
                )

    relay = SlowRelay(rt, during=take_over_the_rest)
    result = deliver.deliver(
        ids, channel="email", sessions=rt.sessions, settings=rt.settings,
        channels=rt.channels, scheduler=rt, clock=lambda: relay.now,
    )  # fmt: skip

    assert (result.sent, result.lost_lease) == (2, 1)
    assert len(smtp_server.messages) == 2 and len(relay.sent) == 2


@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_synchronous_commit_setting_reaches_each_outcome_and_not_other_work(
    make_runtime, smtp_server, monkeypatch, setting
):
    rt = make_runtime(**smtp_server.settings(), delivery_synchronous_commit=setting)
    ids = pending_email(rt, recipients=["ada", "bob"])
    seen, connections = [], []
    original = outcomes.finish

    def finish(*, session, **kwargs):
        # What the outcome statement runs with, on the connection it runs on.
        driver = session.info[outcomes._DRIVER]
        connections.append(driver)
        seen.append(driver.execute("SHOW synchronous_commit").fetchone()[0])
        return original(session=session, **kwargs)

    monkeypatch.setattr(outcomes, "finish", finish)
    assert run_deliver(rt, ids).sent == 2
    assert seen == [setting, setting]
    with rt.sessions() as s:
        assert {s.get(Delivery, i).status for i in ids} == {"sent"}
    # Back in the pool, the connection commits other work (create tasks) durably again.
    driver = connections[0]
    assert driver.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    driver.rollback()


def test_a_retry_too_far_out_for_a_countdown_is_parked_for_the_sweeper(
    make_runtime, smtp_server, monkeypatch
):
    monkeypatch.setattr(deliver.random, "uniform", lambda low, high: high)  # jitter's top end
    rt = make_runtime(
        **smtp_server.settings(), broker_visibility_timeout=60, retry_backoff_seconds=100
    )
    smtp_server.handler.steady = "451 4.3.0 Try later"
    [did] = pending_email(rt)
    result = run_deliver(rt, [did])

    assert (result.retried, result.parked) == (1, 1)
    assert queued(rt.celery, queues.deliver_queue("email")) == 0  # no long countdown
    row = delivery(rt, (pending_nid := _notification_of(rt, did)))
    assert row.status == "failed" and row.next_attempt_at > utcnow()

    smtp_server.handler.steady = "ok"
    assert sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt) == {}
    later = utcnow() + timedelta(seconds=101)
    swept = sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt, now=later)
    assert swept == {"failed": 1}
    drain(rt.celery)
    assert delivery(rt, pending_nid).status == "sent"


def _notification_of(rt, did):
    with rt.sessions() as s:
        return s.get(Delivery, did).notification_id


def test_the_sweeper_re_enqueues_a_delivery_whose_task_was_lost(make_runtime, smtp_server):
    rt = make_runtime(**smtp_server.settings(), sweeper_stuck_seconds=0.5)
    [did] = pending_email(rt)  # and its task is lost

    assert sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt) == {}
    time.sleep(0.6)
    assert sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt) == {"pending": 1}
    # Re-checked later, not re-enqueued at every sweep while its task waits in the queue.
    assert sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt) == {}
    drain(rt.celery)
    assert len(smtp_server.messages) == 1 and delivery(rt, _notification_of(rt, did)).status == (
        "sent"
    )


def _dead_letters(rt, smtp_server, n=2):
    smtp_server.handler.steady = "550 5.7.1 Rejected by policy"
    for i in range(n):
        give_email(rt, f"u{i}")
        notify(rt, recipients=(f"u{i}",))
    drain(rt.celery)
    smtp_server.handler.steady = "ok"


def test_dead_letters_are_listed_inspected_and_replayed_once_the_cause_is_fixed(
    rt, smtp_server, client
):
    from fastapi.testclient import TestClient

    from clarion.api.app import create_app

    _dead_letters(rt, smtp_server, n=3)
    admin = {"Authorization": f"Bearer {make_key(rt, 'admin')}"}
    notify_only = {"Authorization": f"Bearer {make_key(rt, 'notify')}"}
    with TestClient(create_app(runtime=rt)) as api:
        assert api.get("/v1/dead-letters", headers=notify_only).status_code == 403
        page = api.get("/v1/dead-letters?channel=email&limit=2", headers=admin).json()
        assert len(page["items"]) == 2 and page["next_cursor"]
        rest = api.get(f"/v1/dead-letters?limit=2&cursor={page['next_cursor']}", headers=admin)
        assert len(rest.json()["items"]) == 1
        first = page["items"][0]
        detail = api.get(f"/v1/dead-letters/{first['id']}", headers=admin).json()
        assert detail["delivery_status"] == "dead" and detail["timeline"][0]["outcome"] == "dead"
        assert "550 5.7.1" in detail["error"]

        one = api.post(f"/v1/dead-letters/{first['id']}/replay", headers=admin)
        assert one.json()["replayed"] == 1
        again = api.post(f"/v1/dead-letters/{first['id']}/replay", headers=admin)
        assert again.status_code == 409
        assert api.post("/v1/dead-letters/replay", json={}, headers=admin).status_code == 422
        many = api.post(
            "/v1/dead-letters/replay", json={"error_contains": "5.7.1"}, headers=admin
        ).json()
        assert many["replayed"] == 2
        drain(rt.celery)
        assert len(smtp_server.messages) == 3
        assert api.get("/v1/dead-letters", headers=admin).json()["items"] == []

        purged = api.post("/v1/dead-letters/purge", json={"all": True}, headers=admin).json()
        assert purged["purged"] == 3
    with rt.sessions() as s:
        audit = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert s.scalars(select(DeadLetter)).all() == []
    assert [(a.action, a.count) for a in audit] == [
        ("dead_letters.replay", 1),
        ("dead_letters.replay", 2),
        ("dead_letters.purge", 3),
    ]
    assert audit[1].actor.startswith("api-key:test#") and audit[1].detail["error_contains"]


def test_the_cli_lists_shows_replays_and_purges_dead_letters(rt, smtp_server):
    from tests.e2e.procs import run

    _dead_letters(rt, smtp_server, n=2)
    env = process_env(rt.settings.database_url)
    listed = run(["dead-letters", "list", "--channel", "email"], env).splitlines()
    assert len(listed) == 2 and all("550 5.7.1" in line for line in listed)
    first = listed[0].split("\t")[0]
    assert '"outcome": "dead"' in run(["dead-letters", "show", first], env)
    assert "'replayed': 1" in run(["dead-letters", "replay", first], env)
    assert "'replayed': 1" in run(["dead-letters", "replay", "--error", "5.7.1"], env)
    drain(rt.celery)
    assert len(smtp_server.messages) == 2
    assert "'purged': 2" in run(["dead-letters", "purge", "--all"], env)
    with rt.sessions() as s:
        actors = set(s.scalars(select(AuditEntry.actor)))
    assert len(actors) == 1 and actors.pop().startswith("cli:")


class Collected:
    """A scheduler that keeps what the deliver step dispatches."""

    def __init__(self) -> None:
        self.retries: list[tuple[list, float]] = []
        self.letters: list[dict] = []

    def deliver(self, channel, delivery_ids, countdown=0, lane=None) -> None:
        self.retries.append((list(delivery_ids), countdown))

    def dead_lettered(self, letter: dict) -> None:
        self.letters.append(letter)


def test_on_sqlite_a_retry_a_dead_letter_and_a_send_are_each_recorded(tmp_path, smtp_server):
    # The embedded profile records an outcome in a plain transaction, not PostgreSQL's
    # one-statement CTE: the rows and the timeline must come out the same.
    from clarion.core import enqueue
    from clarion.core.create import create_notifications
    from clarion.core.schemas import NotificationCreate
    from clarion.db.migrate import upgrade
    from clarion.runtime import Runtime
    from clarion.settings import Settings
    from tests.channels import outcomes

    settings = Settings.embedded(
        tmp_path, delivery_max_attempts=2, **FAST_RETRY, **smtp_server.settings()
    )
    upgrade(settings.database_url)
    rt = Runtime(settings)
    try:
        for r in ("ada", "bob"):
            give_email(rt, r)
        request = NotificationCreate(
            recipients=["ada", "bob"], category="x", title="t", channels=["email"]
        )
        create_notifications([enqueue.prepare(request)], **rt.pipeline.kwargs())
        with rt.sessions() as s:
            by_recipient = dict(
                s.execute(
                    select(Notification.recipient_id, Delivery.id)
                    .join(Notification, Notification.id == Delivery.notification_id)
                    .where(Delivery.channel == "email")
                ).all()
            )
        ada, bob = by_recipient["ada"], by_recipient["bob"]
        scheduler = Collected()

        def run(ids):
            return run_deliver(rt, ids, scheduler)

        smtp_server.handler.replies = ["451 4.3.0 Try again later", "550 5.7.1 No"]
        assert run([ada]).retried == 1
        assert scheduler.retries[0][0] == [ada]
        time.sleep(0.1)  # past the retry's backoff (at most 0.05 s)
        assert run([ada]).dead == 1
        assert run([bob]).sent == 1
        with rt.sessions() as s:
            letter = s.scalars(select(DeadLetter)).one()
            rows = {d.id: d for d in s.scalars(select(Delivery))}
        assert outcomes(rt, ada) == ["retry", "dead"] and outcomes(rt, bob) == ["sent"]
        assert (rows[ada].status, rows[ada].attempts, rows[bob].status) == ("dead", 2, "sent")
        assert (letter.delivery_id, letter.attempts) == (ada, 2) and "550" in letter.error
        assert [x["id"] for x in scheduler.letters] == [letter.id]
        assert rows[bob].provider_ref == smtp_server.messages[0].message["Message-ID"]
    finally:
        rt.close()


def test_retries_go_out_in_few_tasks_and_none_before_its_own_delay():
    ids = list(range(100))
    delays = [0.001 * (i % 7) for i in range(50)] + [30 + i for i in range(50)]
    groups = deliver.retry_groups(list(zip(delays, ids, strict=True)))

    assert sorted(i for _, members in groups for i in members) == ids
    by_id = dict(zip(ids, delays, strict=True))
    for countdown, members in groups:
        for i in members:
            # No retry is dispatched before its row is due, nor much after.
            assert by_id[i] <= countdown <= by_id[i] * deliver.RETRY_GROUP_RATIO + 0.05
    assert groups[0][0] == 0.006 and sorted(groups[0][1]) == ids[:50]
    assert len(groups) < 20
