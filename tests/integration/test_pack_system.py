"""The system pack on real Redis and PostgreSQL: each rule at its threshold, once per window."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from clarion.core import queues
from clarion.db.models import (
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscriber,
)
from clarion.db.session import transaction
from clarion.engine import canary
from clarion.engine.packs import system
from clarion.engine.runner import run_rule
from clarion.ids import utcnow
from tests.broker import drain, queued
from tests.conftest import process_env
from tests.e2e.procs import Proc, wait_for

# Aligned to the hour: with renotify_minutes=60 the window runs NOW .. NOW + 60 min.
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OPS = ["ops-ada", "ops-bob"]


def system_runtime(make_runtime, **config):
    return make_runtime(rules={"system": {"operators": OPS, **config}})


def run(rt, key, as_of=NOW):
    result = run_rule(key, runtime=rt, rules=rt.rules, trigger="manual", as_of=as_of)
    assert result.error is None, result.error
    return result


def alarms(rt) -> list[Notification]:
    with rt.sessions() as s:
        stmt = select(Notification).where(Notification.category == "system")
        return list(s.scalars(stmt.order_by(Notification.recipient_id)))


def subjects(rt) -> set[str]:
    return {n.meta["subject"] for n in alarms(rt)}


def assert_once_per_window(rt, key, count: int) -> None:
    """Reruns in the window add nothing; the first run in the next window notifies again."""
    for minutes in (1, 30, 59):
        assert run(rt, key, NOW + timedelta(minutes=minutes)).created == 0
    assert run(rt, key, NOW + timedelta(minutes=60)).created == count * len(OPS)


# --- queue_backlog --------------------------------------------------------------------


def fill(rt, queue: str, n: int) -> None:
    for _ in range(n):
        rt.celery.send_task("test.noop", queue=queue)


def test_queue_backlog_fires_above_the_threshold_only(make_runtime):
    rt = system_runtime(make_runtime, backlog_threshold=5)
    fill(rt, queues.CREATE, 5)  # at the threshold: fine
    fill(rt, queues.deliver_queue("email"), 6)
    assert run(rt, "queue_backlog").created == len(OPS)
    [first, _] = alarms(rt)
    assert first.category == "system" and first.severity == "high"
    assert first.type == "queue_backlog" and "6 messages" in first.body
    assert first.meta["waiting"] == 6 and first.meta["threshold"] == 5
    assert first.dedupe_key == "system:queue_backlog:deliver.email:20261122T120000Z"

    fill(rt, queues.CREATE, 1)  # now above it too
    assert run(rt, "queue_backlog").created == len(OPS)
    assert subjects(rt) == {"deliver.email", "create"}


def test_queue_backlog_renotifies_once_per_window(make_runtime):
    rt = system_runtime(make_runtime, backlog_threshold=0)
    fill(rt, queues.ENGINE, 1)
    assert run(rt, "queue_backlog").created == len(OPS)
    assert_once_per_window(rt, "queue_backlog", 1)


# --- queue_delay ----------------------------------------------------------------------


@pytest.fixture
def broker_redis(runtime):
    with runtime.celery.connection_for_write() as conn:
        yield canary.redis_of(conn)


def test_queue_delay_fires_when_a_canary_is_not_consumed_within_the_threshold(make_runtime):
    rt = system_runtime(make_runtime, delay_threshold_seconds=60)
    watched = [q for q in queues.ALL_QUEUES if q != queues.DEAD_LETTER]
    assert run(rt, "queue_delay").created == 0  # sends one canary to every watched queue
    assert [queued(rt.celery, q) for q in watched] == [1] * len(watched)
    assert queued(rt.celery, queues.DEAD_LETTER) == 0

    assert run(rt, "queue_delay", NOW + timedelta(seconds=60)).created == 0  # at it: fine
    assert [queued(rt.celery, q) for q in watched] == [1] * len(watched)  # one in flight
    late = run(rt, "queue_delay", NOW + timedelta(seconds=61))
    assert late.created == len(watched) * len(OPS)
    assert subjects(rt) == set(watched)
    n = alarms(rt)[0]
    assert n.meta["pending_seconds"] == 61 and n.meta["threshold_seconds"] == 60
    assert "61 s ago has not run yet" in n.body


def test_queue_delay_fires_when_the_last_canary_waited_too_long(make_runtime):
    rt = system_runtime(make_runtime, delay_queues=["create"])
    sent = utcnow() - timedelta(seconds=90)
    run(rt, "queue_delay", sent)  # a canary sent 90 s ago...
    assert drain(rt.celery) == 1  # ...that a worker runs now
    result = run(rt, "queue_delay", utcnow())
    assert result.created == len(OPS)
    n = alarms(rt)[0]
    assert n.meta["pending_seconds"] is None
    assert 90 <= n.meta["last_delay_seconds"] < 120
    assert queued(rt.celery, queues.CREATE) == 1  # the next canary is on its way


def test_queue_delay_threshold_on_the_observed_wait(make_runtime, broker_redis):
    rt = system_runtime(make_runtime, delay_queues=["create"], delay_threshold_seconds=60)
    now = NOW.timestamp()
    canary.observe(broker_redis, "create", sent_at=now - 60, token="t1", now=now)
    assert run(rt, "queue_delay").created == 0  # waited exactly the threshold
    canary.observe(broker_redis, "create", sent_at=now - 60.5, token="t2", now=now)
    assert run(rt, "queue_delay").created == len(OPS)
    assert alarms(rt)[0].meta["last_delay_seconds"] == 60.5


def test_a_consumed_canary_clears_only_its_own_pending_mark(runtime, broker_redis):
    assert canary.probe(runtime.celery, broker_redis, "create", NOW) is True
    assert canary.probe(runtime.celery, broker_redis, "create", NOW) is False  # one in flight
    canary.observe(broker_redis, "create", sent_at=0, token="someone-else", now=1)
    assert canary.read(broker_redis, "create").pending_since == NOW.timestamp()
    assert drain(runtime.celery) == 1
    reading = canary.read(broker_redis, "create")
    assert reading.pending_since is None and reading.last_delay is not None


def test_queue_delay_renotifies_once_per_window(make_runtime):
    rt = system_runtime(make_runtime, delay_queues=["periodic"], delay_threshold_seconds=1)
    run(rt, "queue_delay", NOW - timedelta(seconds=5))  # a canary nobody consumes
    assert run(rt, "queue_delay").created == len(OPS)
    assert_once_per_window(rt, "queue_delay", 1)


# --- dead_letter_growth and delivery_failure_rate -------------------------------------


def delivery(session, channel: str) -> uuid.UUID:
    """A notification with one delivery on ``channel`` (rows only; nothing is sent)."""
    if session.get(Subscriber, "user") is None:
        session.add(Subscriber(id="user", data={}, seq=0, created_at=NOW, updated_at=NOW))
        session.flush()
    nid, did = uuid.uuid4(), uuid.uuid4()
    session.add(
        Notification(
            id=nid,
            request_id=uuid.uuid4(),
            recipient_id="user",
            seq=0,
            category="links",
            severity="medium",
            title="t",
            meta={},
            created_at=NOW,
        )
    )
    session.flush()
    session.add(
        Delivery(
            id=did,
            notification_id=nid,
            channel=channel,
            status="dead",
            attempts=1,
            created_at=NOW,
            updated_at=NOW,
        )
    )
    session.flush()
    return did


def dead_letters(rt, channel: str, *ages: timedelta) -> None:
    with transaction(rt.sessions) as s:
        for age in ages:
            did = delivery(s, channel)
            s.add(
                DeadLetter(
                    delivery_id=did,
                    notification_id=uuid.uuid4(),
                    channel=channel,
                    error="boom",
                    attempts=8,
                    created_at=NOW - age,
                )
            )


def test_dead_letter_growth_counts_the_window_per_channel(make_runtime):
    rt = system_runtime(make_runtime, dead_letter_threshold=3, dead_letter_window_minutes=15)
    inside = [timedelta(0), timedelta(minutes=5), timedelta(minutes=14, seconds=59)]
    dead_letters(rt, "email", *inside, timedelta(minutes=15))  # the last one: outside
    dead_letters(rt, "webhook", *inside, timedelta(minutes=1))
    dead_letters(rt, "push", *[timedelta(minutes=1)] * 3, -timedelta(seconds=1))  # future
    assert run(rt, "dead_letter_growth").created == len(OPS)
    assert subjects(rt) == {"webhook"}
    n = alarms(rt)[0]
    assert n.meta["dead_letters"] == 4 and n.meta["threshold"] == 3
    assert "4 webhook deliveries were dead-lettered in the last 15 min" in n.body


def test_dead_letter_growth_renotifies_once_per_window(make_runtime):
    # A window long enough that the same letters count at every run below.
    rt = system_runtime(make_runtime, dead_letter_threshold=0, dead_letter_window_minutes=180)
    dead_letters(rt, "email", timedelta(minutes=1))
    assert run(rt, "dead_letter_growth").created == len(OPS)
    assert_once_per_window(rt, "dead_letter_growth", 1)


def attempts(rt, channel: str, outcomes: dict[str, int], age=timedelta(minutes=1)) -> None:
    with transaction(rt.sessions) as s:
        did = delivery(s, channel)
        for outcome, count in outcomes.items():
            for _ in range(count):
                at = NOW - age
                s.add(
                    DeliveryAttempt(
                        delivery_id=did, attempt=1, started_at=at, finished_at=at, outcome=outcome
                    )
                )


def test_delivery_failure_rate_fires_above_the_rate_with_enough_attempts(make_runtime):
    rt = system_runtime(
        make_runtime, failure_rate_threshold=0.2, failure_window_minutes=10, failure_min_attempts=20
    )
    attempts(rt, "email", {"sent": 16, "retry": 3, "dead": 1})  # 4/20 = 0.2: at it
    attempts(rt, "push", {"sent": 14, "retry": 3, "dead": 2, "gone": 1})  # 5/20 = 0.25
    attempts(rt, "webhook", {"retry": 19})  # all failed, but only 19 attempts
    attempts(rt, "in_app", {"retry": 30}, age=timedelta(minutes=10))  # outside the window
    assert run(rt, "delivery_failure_rate").created == len(OPS)
    assert subjects(rt) == {"push"}
    n = alarms(rt)[0]
    assert (n.meta["failed"], n.meta["attempts"], n.meta["rate"]) == (5, 20, 0.25)
    assert "5 of 20 push delivery attempts failed in the last 10 min (25.0%" in n.body

    attempts(rt, "email", {"retry": 1})  # 5/21 > 0.2
    assert run(rt, "delivery_failure_rate").created == len(OPS)
    assert subjects(rt) == {"push", "email"}


def test_delivery_failure_rate_renotifies_once_per_window(make_runtime):
    rt = system_runtime(make_runtime, failure_window_minutes=180, failure_min_attempts=1)
    attempts(rt, "webhook", {"retry": 1})
    assert run(rt, "delivery_failure_rate").created == len(OPS)
    assert_once_per_window(rt, "delivery_failure_rate", 1)


# --- no_worker ------------------------------------------------------------------------


def test_no_worker_fires_critical_when_no_worker_answers(make_runtime):
    rt = system_runtime(make_runtime, ping_timeout_seconds=0.5)
    assert run(rt, "no_worker").created == len(OPS)
    n = alarms(rt)[0]
    assert n.severity == "critical" and n.title == "No Clarion worker is running"
    assert n.meta["timeout_seconds"] == 0.5
    assert_once_per_window(rt, "no_worker", 1)


@pytest.mark.e2e
def test_no_worker_is_silent_while_a_real_worker_runs(make_runtime, tmp_path):
    rt = system_runtime(make_runtime, ping_timeout_seconds=2)
    env = process_env(rt.settings.database_url, CLARION_LOG_LEVEL="WARNING")
    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    try:
        wait_for(lambda: rt.celery.control.ping(timeout=0.5), 30, "the worker's pong", worker)
        assert run(rt, "no_worker").created == 0
    finally:
        worker.stop()
    assert alarms(rt) == []


# --- high_load ------------------------------------------------------------------------


class FixedLoad(system.HighLoad):
    """The host's load is not ours to set: these runs read a given load instead."""

    load = (0.0, 1)

    def measure(self):
        return self.load


@pytest.mark.parametrize(("load", "fires"), [((8.0, 4), False), ((8.04, 4), True)])
def test_high_load_fires_above_the_load_per_core(make_runtime, load, fires):
    rt = system_runtime(make_runtime, load_per_core_threshold=2.0)
    rt.rules.classes["high_load"] = type("Load", (FixedLoad,), {"load": load})
    assert run(rt, "high_load").created == (len(OPS) if fires else 0)
    if fires:
        n = alarms(rt)[0]
        assert (n.meta["load_5m"], n.meta["cores"], n.meta["load_per_core"]) == (8.04, 4, 2.01)
        assert_once_per_window(rt, "high_load", 1)


def test_high_load_reads_this_host(make_runtime):
    rule = make_runtime().rules.build("high_load")
    load, cores = rule.measure()
    assert load >= 0 and cores == os.cpu_count()
    rt = system_runtime(make_runtime, load_per_core_threshold=10_000)
    assert run(rt, "high_load").created == 0


# --- without operators ----------------------------------------------------------------


def test_without_operators_no_rule_notifies_or_probes(make_runtime):
    rt = make_runtime(
        rules={
            "system": {
                "backlog_threshold": 0,
                "delay_threshold_seconds": 1,
                "dead_letter_threshold": 0,
                "failure_rate_threshold": 0,
                "failure_min_attempts": 1,
                "ping_timeout_seconds": 0.2,
                "load_per_core_threshold": 0,
            }
        }
    )
    fill(rt, queues.ENGINE, 3)
    dead_letters(rt, "email", timedelta(minutes=1))
    attempts(rt, "email", {"dead": 5})
    for key in [r.key for r in system.RULES]:
        result = run(rt, key)
        assert (result.candidates, result.created) == (0, 0), key
    assert alarms(rt) == []
    assert queued(rt.celery, queues.CREATE) == queued(rt.celery, queues.PERIODIC) == 0  # no canary


def test_the_pack_config_is_validated_when_the_rules_load(make_runtime):
    from clarion.engine.registry import RuleError

    with pytest.raises(RuleError, match="unknown queues"):
        _ = make_runtime(rules={"system": {"delay_queues": ["nope"]}}).rules
