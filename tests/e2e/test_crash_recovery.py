"""A SIGKILLed worker's messages come back within a minute, with default recovery settings.

Real ``clarion api``, ``clarion worker`` and ``clarion beat`` processes on PostgreSQL and
Redis. No recovery timeout is shortened: the visibility timeout, heartbeat, restore
interval, lease and sweeper interval are the defaults (docs/concepts/crash-recovery.md).
"""

from __future__ import annotations

import base64
import json
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from clarion.db.models import Delivery, Notification
from tests.channels.smtp import SENDER, give_email
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e

TOTAL = 200
# The promise: stored (and sent) within this many seconds of the replacement starting.
RECOVERY_SECONDS = 60


@pytest.fixture
def env(runtime) -> dict[str, str]:
    return process_env(runtime.settings.database_url, CLARION_LOG_LEVEL="WARNING")


def count(runtime, model, *where) -> int:
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def post_all(base: str, key: str, recipients: list[str], channels: list[str]) -> list[str]:
    """One request per notification, eight at a time (the API coalesces some of them)."""

    def one(i: int) -> str:
        sent = httpx.post(
            f"{base}/v1/notifications",
            json={
                "recipients": [recipients[i]],
                "category": "crash",
                "title": f"n{i}",
                "channels": channels,
            },
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert sent.status_code == 202, sent.text
        return sent.json()["notifications"][0]["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(recipients))))


def held(runtime, task: str) -> list[list]:
    """The arguments of the ``task`` messages a worker has taken and not acknowledged
    (kombu's Redis ``unacked`` hash: [message, exchange, routing key]; Celery's body is
    [args, kwargs, embed])."""
    broker = runtime.celery.connection_for_write().default_channel.client
    messages = [json.loads(raw)[0] for raw in broker.hvals("unacked")]
    return [
        json.loads(base64.b64decode(m["body"]))[0] for m in messages if m["headers"]["task"] == task
    ]


def broker_state(runtime) -> str:
    """Where messages are, for a failure's message: queued, unacked (and how stale)."""
    broker = runtime.celery.connection_for_write().default_channel.client
    now = time.time()
    ages = [
        round(now - score) for _, score in broker.zrange("unacked_index", 0, -1, withscores=True)
    ]
    queues = {q.decode(): broker.llen(q) for q in broker.keys("create*") + broker.keys("deliver*")}
    return f"queued {queues}, unacked ages {ages}, mutex ttl {broker.ttl('unacked_mutex')}"


def held_notification_ids(runtime) -> set[str]:
    return {nid for args in held(runtime, "clarion.create") for m in args for nid, _ in m["items"]}


def recovered_by_a_new_worker(runtime, env, log, done, what: str) -> float:
    """Start a replacement worker and wait until ``done()``; the seconds it took."""
    started = time.monotonic()
    second = Proc(["worker", "--concurrency", "2"], env, log)
    try:
        wait_for(done, RECOVERY_SECONDS, what, second)
        took = time.monotonic() - started
        print(f"recovered in {took:.1f} s")
        return took
    except AssertionError as exc:
        raise AssertionError(f"{broker_state(runtime)}\n{exc}") from None
    finally:
        second.stop()


@pytest.fixture
def platform(env, tmp_path):
    """The API and beat; the workers are each test's own."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = run(["keys", "create", "crash", "--scope", "notify"], env).strip().splitlines()[-1]
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    beat = Proc(["beat", "--schedule", str(tmp_path / "beat-schedule")], env, tmp_path / "b.log")
    try:
        wait_ready(base, api)
        yield base, key
    finally:
        api.stop()
        beat.stop()


# The recovery alone may take a minute; the processes start and stop around it.
@pytest.mark.timeout(240)
def test_a_killed_workers_create_messages_are_stored_within_a_minute(
    env, runtime, platform, tmp_path
):
    base, key = platform
    ids = post_all(base, key, [f"user-{i}" for i in range(TOTAL)], ["in_app"])
    assert len(set(ids)) == TOTAL

    first = Proc(["worker", "--concurrency", "2"], env, tmp_path / "w1.log")

    def frozen_holding_unstored() -> bool:
        # Frozen, so what it holds can be read; killed (with its children) only while it
        # holds a message it has not stored yet, else thawed to try again a moment later.
        first.send_signal(signal.SIGSTOP)
        with runtime.sessions() as s:
            stored = {str(i) for i in s.scalars(select(Notification.id))}
        if held_notification_ids(runtime) - stored:
            return True
        first.send_signal(signal.SIGCONT)
        return False

    try:
        wait_for(lambda: count(runtime, Notification) >= 1, 60, "the first worker to store", first)
        wait_for(frozen_holding_unstored, 60, "the worker to hold unstored messages", first)
    finally:  # never left running: it would take the next tests' messages
        first.stop(signal.SIGKILL)
    with runtime.sessions() as s:
        stored_at_kill = {str(i) for i in s.scalars(select(Notification.id))}
    # Taken by the dead worker and not stored: what only a recovery can bring back.
    taken = len(held_notification_ids(runtime) - stored_at_kill)
    at_kill = len(stored_at_kill)
    assert taken > 0

    took = recovered_by_a_new_worker(
        runtime,
        env,
        tmp_path / "w2.log",
        lambda: count(runtime, Notification) == TOTAL,
        f"all {TOTAL} stored ({at_kill} at the kill, {taken} held by the dead worker)",
    )

    with runtime.sessions() as s:
        stored = s.scalars(select(Notification.id)).all()
    assert sorted(str(i) for i in stored) == sorted(ids)  # each once, none extra
    assert took <= RECOVERY_SECONDS


@pytest.mark.timeout(240)
def test_a_worker_killed_mid_send_has_every_email_sent_once_within_a_minute(
    env, runtime, platform, tmp_path, smtp_server
):
    base, key = platform
    env = {
        **env,
        "CLARION_SMTP_HOST": "127.0.0.1",
        "CLARION_SMTP_PORT": str(smtp_server.port),
        "CLARION_SMTP_FROM": SENDER,
    }
    recipients = [f"user-{i}" for i in range(TOTAL)]
    for r in recipients:
        give_email(runtime, r)
    # One send at a time: with two, the other process could be past DATA, an email the
    # server has but whose outcome the killed worker never committed; that one is sent
    # again after the lease (the documented window, docs/concepts/crash-recovery.md).
    first = Proc(["worker", "--concurrency", "1"], env, tmp_path / "w1.log")
    taken: list[int] = []

    def kill_at_the_60th_mail(seen: int) -> None:
        # Between MAIL and DATA: the email in flight is claimed, not accepted, so the only
        # copy the receiver gets is the one sent after the takeover.
        if seen == 60:
            smtp_server.handler.on_mail = None
            first.send_signal(signal.SIGSTOP)
            taken.append(len(held(runtime, "clarion.deliver")))
            first.send_signal(signal.SIGKILL)

    smtp_server.handler.on_mail = kill_at_the_60th_mail
    ids = post_all(base, key, recipients, ["in_app", "email"])
    wait_for(lambda: first.popen.poll() is not None, 60, "the worker to be killed", None)
    first.stop()
    assert taken and taken[0] > 0, f"the worker held {taken} deliver messages at the kill"
    sending = count(runtime, Delivery, Delivery.status == "sending")
    assert sending > 0, "no delivery was claimed by the killed worker"

    took = recovered_by_a_new_worker(
        runtime,
        env,
        tmp_path / "w2.log",
        lambda: (
            count(runtime, Delivery, Delivery.status == "sent") == TOTAL
            and count(runtime, Notification) == TOTAL
        ),
        f"all {TOTAL} stored and emailed ({sending} were being sent at the kill)",
    )

    with runtime.sessions() as s:
        stored = s.scalars(select(Notification.id)).all()
        refs = set(s.scalars(select(Delivery.provider_ref)))
    assert sorted(str(i) for i in stored) == sorted(ids)
    message_ids = [m.message["Message-ID"] for m in smtp_server.messages]
    # Every recipient emailed exactly once: as many emails as deliveries, no Message-ID twice.
    assert len(message_ids) == TOTAL and set(message_ids) == refs
    assert took <= RECOVERY_SECONDS


@pytest.mark.timeout(180)
def test_a_live_worker_keeps_a_message_longer_than_the_visibility_timeout(env, runtime, tmp_path):
    """The short timeout costs live workers nothing: a countdown longer than it stays with
    the worker that holds it (its heartbeat keeps the message's unacked time fresh) and runs
    once, instead of being redelivered to run twice."""
    env = {**env, "CLARION_LOG_LEVEL": "INFO"}
    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "w.log")
    try:
        wait_for(lambda: "ready" in worker.output(), 60, "the worker", worker)
        task_id = str(uuid.uuid4())
        countdown = runtime.settings.broker_visibility_timeout + 10
        runtime.celery.send_task(
            "clarion.deliver",
            args=["webhook", [str(uuid.uuid4())]],  # no such delivery: a no-op when it runs
            queue="deliver.webhook",
            task_id=task_id,
            countdown=countdown,
        )
        broker = runtime.celery.connection_for_write().default_channel.client
        oldest = 0.0
        deadline = time.monotonic() + countdown + 30
        while f"{task_id}] succeeded" not in worker.output():
            assert time.monotonic() < deadline, worker.output()[-3000:]
            tags = [
                tag for tag, raw in broker.hgetall("unacked").items() if task_id in raw.decode()
            ]
            assert len(tags) <= 1, "the message was redelivered while its holder lived"
            for tag in tags:
                score = broker.zscore("unacked_index", tag)
                if score is not None:
                    oldest = max(oldest, time.time() - score)
            time.sleep(0.5)
    finally:
        worker.stop()
    assert worker.output().count(f"{task_id}] succeeded") == 1
    # Refreshed every heartbeat (5 s), never near the 30 s after which it would be restored.
    assert oldest < 12
