"""Thin tasks: decode ids, call one core function, let Celery retry what is transient.

Every task is idempotent (see clarion.core.create and clarion.core.deliver), so Celery's
at-least-once delivery never shows the user anything twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from celery import Celery, Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from clarion.channels import Channels
from clarion.core import (
    batches,
    digests,
    enqueue,
    failures,
    ledger,
    queues,
    recurring,
    retention,
    schedule,
    snooze,
    sweeper,
)
from clarion.core import deliver as deliver_core
from clarion.core import fanout as fanout_core
from clarion.core.deliver import Scheduler
from clarion.core.lanes import LANES, NORMAL
from clarion.core.pubsub import PubSub
from clarion.core.schemas import FanoutMessage
from clarion.engine import canary
from clarion.engine.events import ingest
from clarion.engine.registry import Rules
from clarion.engine.rules import RuleRuntime
from clarion.engine.runner import RuleDisabled
from clarion.engine.runner import run_rule as run

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)

# Database hiccups (failover, deadlock victim, serialisation failure) are worth a retry;
# anything else in a task is a bug and is logged, not retried forever. The database
# refusing the data itself is permanent: the same values fail the same way (create and
# fan-out record such a request instead: clarion.core.failures).
TRANSIENT = (OperationalError, DBAPIError)
PERMANENT = (DataError, IntegrityError)
RETRY_TRANSIENT = {
    "autoretry_for": TRANSIENT,
    "dont_autoretry_for": PERMANENT,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
}
# A fan-out publishes while it walks: a broker hiccup mid-walk is retried too (the rerun
# republishes the same ids; create skips what it stored).
RETRY_FANOUT = {**RETRY_TRANSIENT, "autoretry_for": (*TRANSIENT, BrokerError)}


class TaskRuntime(RuleRuntime, Scheduler, Protocol):
    """What the tasks use of ``app.clarion`` (a :class:`clarion.runtime.Runtime`, which
    sits above the workers and is never imported here)."""

    @property
    def pubsub(self) -> PubSub: ...
    @property
    def channels(self) -> Channels: ...
    @property
    def rules(self) -> Rules: ...


def _settle(task: Task) -> None:
    """The task's message is stored for good: clear it from the ledger. A failure here
    only means the sweeper re-publishes it later, which the task ignores."""
    if not task.request.id:  # called as a plain function (tests)
        return
    try:
        ledger.for_app(task.app).settle(task.request.id)
    except Exception:  # noqa: BLE001 - the work is committed; the re-publish is harmless
        log.warning("could not settle ledger entry %s", task.request.id, exc_info=True)


# Every task, declared at module level and bound to each Celery app by register(): the app
# is built per Runtime (tests build several), and each task reaches its own app's runtime.
_TASKS: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def task(name: str, **options: Any) -> Callable[[F], F]:
    """Declare a task under ``name`` (the name producers and queued messages use)."""

    def declare(fun: F) -> F:
        _TASKS.append((fun, {"name": name, "shared": False, **options}))
        return fun

    return declare


def register(app: Celery) -> None:
    """Bind every task to ``app``."""
    for fun, options in _TASKS:
        app.task(**options)(fun)


def _runtime(task: Task) -> TaskRuntime:
    return task.app.clarion  # set by create_celery (celery is untyped)


@task("clarion.create", bind=True, **RETRY_TRANSIENT)
def create(self: Task, *messages: dict) -> dict:
    """One or more requests (the API coalesces concurrent ones), one transaction; a
    request that cannot be stored is recorded as failed, the others are stored."""
    counts = batches.create_requests(list(messages), **_runtime(self).pipeline.kwargs())
    _settle(self)
    return counts


@task("clarion.fanout", bind=True, **RETRY_FANOUT)
def fanout(self: Task, message: dict) -> dict:
    """A request to a topic: one create task per page of its subscribers (bulk lane)."""
    runtime = _runtime(self)

    def run() -> fanout_core.FanoutResult:
        return fanout_core.fan_out(
            FanoutMessage.model_validate(message),
            sessions=runtime.sessions,
            settings=runtime.settings,
            publish=lambda batch: enqueue.enqueue(self.app, batch),
        )

    result = failures.run_or_record("fanout", message, run, sessions=runtime.sessions)
    _settle(self)
    if result is None:
        return {"failed": 1}
    return {"recipients": result.recipients, "batches": result.batches}


@task("clarion.deliver", bind=True, **RETRY_TRANSIENT)
def deliver(self: Task, channel: str, delivery_ids: list[str], lane: str = NORMAL) -> dict:
    """Send one channel's deliveries; retries and dead letters go through the rows."""
    runtime = _runtime(self)
    result = deliver_core.deliver(
        [uuid.UUID(i) for i in delivery_ids],
        channel=channel,
        sessions=runtime.sessions,
        settings=runtime.settings,
        channels=runtime.channels,
        scheduler=runtime,
        lane=lane,
    )
    return {
        "sent": result.sent,
        "retried": result.retried,
        "parked": result.parked,
        "dead": result.dead,
        "skipped": result.skipped,
    }


@task("clarion.sweep", bind=True, **RETRY_TRANSIENT)
def sweep(self: Task) -> dict:
    """Re-enqueue deliveries left open past their deadline, and re-publish accepted
    requests the broker lost before they were stored (on beat)."""
    runtime = _runtime(self)
    settings = runtime.settings
    swept = sweeper.sweep(sessions=runtime.sessions, settings=settings, scheduler=runtime)
    book = ledger.for_app(self.app)
    limits = {"max_resends": settings.ledger_max_resends, "limit": settings.sweeper_batch}
    create_queues = [queues.create_queue(lane) for lane in LANES]
    gone = ledger.resend_lost(
        self.app, book, older_than=settings.ledger_lost_seconds, queues=create_queues, **limits
    )
    late = ledger.resend_overdue(
        self.app, book, older_than=settings.ledger_resend_seconds, **limits
    )
    return {
        **swept,
        **{f"ledger_{k}": n + gone[k] for k, n in late.items()},
        "ledger_lost": gone["resent"],
    }


@task("clarion.schedule.release", bind=True, **RETRY_TRANSIENT)
def release_scheduled(self: Task) -> dict:
    """Persist and send the scheduled notifications that are due (on beat)."""
    runtime = _runtime(self)
    released = schedule.release(**runtime.pipeline.kwargs())
    return {"released": released}


@task("clarion.schedules.run", bind=True, **RETRY_FANOUT)
def run_schedules(self: Task) -> dict:
    """Publish the occurrences of recurring schedules that are due (on beat)."""
    runtime = _runtime(self)
    tick = recurring.run(
        sessions=runtime.sessions,
        settings=runtime.settings,
        publish=lambda messages: enqueue.enqueue(self.app, *messages),
    )
    return {"schedules": tick.schedules, "requests": tick.requests, "skipped": tick.skipped}


@task("clarion.snooze.release", bind=True, **RETRY_TRANSIENT)
def release_snoozed(self: Task) -> dict:
    """Bring back the notifications whose snooze has ended, live (on beat)."""
    runtime = _runtime(self)
    released = snooze.release(sessions=runtime.sessions, publisher=runtime.pubsub)
    return {"released": released}


@task("clarion.digests.run", bind=True, **RETRY_TRANSIENT)
def run_digests(self: Task) -> dict:
    """Send one digest per subscriber, category and ended period (on beat)."""
    runtime = _runtime(self)
    made = digests.run(**runtime.pipeline.kwargs())
    return {"digests": made}


@task("clarion.retention.run", bind=True, **RETRY_TRANSIENT)
def run_retention(self: Task) -> dict:
    """Delete what has outlived its retention period, within a time budget (on beat)."""
    runtime = _runtime(self)
    report = retention.run(sessions=runtime.sessions, settings=runtime.settings)
    return {**report.deleted, "done": report.done}


@task("clarion.rules.run", bind=True, **RETRY_TRANSIENT)
def run_rule(self: Task, key: str, trigger: str = "beat", as_of: str | None = None) -> dict:
    """One run of one rule (beat, or an operator's POST /v1/rules/{key}/run)."""
    runtime = _runtime(self)
    when = datetime.fromisoformat(as_of) if as_of else None
    try:
        result = run(key, runtime=runtime, rules=runtime.rules, trigger=trigger, as_of=when)
    except RuleDisabled:
        return {"disabled": True}
    return {"created": result.created, "duplicates": result.duplicates, "error": result.error}


@task("clarion.events.ingest", bind=True, **RETRY_TRANSIENT)
def ingest_event(self: Task, event: dict) -> dict:
    """Store a producer's event and run the event rules of its type."""
    runtime = _runtime(self)
    results = failures.run_or_record(
        "event",
        event,
        lambda: ingest(event, runtime=runtime, rules=runtime.rules),
        sessions=runtime.sessions,
    )
    if results is None:
        return {"failed": 1}
    return {r.key: r.created for r in results}


@task(canary.TASK, bind=True)
def canary_task(self: Task, queue: str, sent_at: float, token: str) -> float | None:
    """Measure how long this message waited in ``queue`` (the system pack's queue_delay
    rule sends it; see clarion.engine.canary). None: the broker is not Redis."""
    with self.app.pool.acquire(block=True) as conn:
        client = canary.redis_of(conn)
        return None if client is None else canary.observe(client, queue, sent_at, token)


@task("clarion.dead_letter")
def dead_letter(letter: dict) -> None:
    """The default consumer of the dead_letter queue: a log line for operators.

    Run workers with ``-X dead_letter`` to consume the queue with your own tooling.
    """
    log.warning("dead letter: %s", letter, extra={"dead_letter": letter})
