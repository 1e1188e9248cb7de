"""Built-in rule pack: system — alarms about Clarion itself, for its operators.

Six scan rules watch the broker, the workers, the delivery tables and the host. Each one
notifies the subscribers listed in the pack's ``operators`` (none listed: the rules do
nothing, not even probe), with category ``system``, severity ``high`` (``critical`` when no
worker answers), and the numbers that triggered it in the body and the metadata.

A condition that persists is notified again at most once per ``renotify_minutes``: the
dedupe key is ``system:<rule>:<subject>:<window start>``, the window being ``ctx.now``
rounded down to a multiple of ``renotify_minutes`` since the epoch. Notifications of one
condition share a collapse key, so a device shows only the newest.

Config: every rule of the pack reads one model (``SystemConfig``), because the pack's
section of ``CLARION_RULES`` is validated against each rule's config, and a per-rule
section (``CLARION_RULES={"queue_backlog": {...}}``) overrides it for one rule.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from pydantic import Field, field_validator
from sqlalchemy import func, select

from clarion.core import queues
from clarion.core.schemas import SubscriberId
from clarion.db.models import DeadLetter, Delivery, DeliveryAttempt
from clarion.engine import canary
from clarion.engine.rules import Candidate, Rule, RuleConfig, RunContext

CATEGORY = "system"


class SystemConfig(RuleConfig):
    """Thresholds of every system rule (one model: the pack shares its config section)."""

    # Subscriber ids notified by every system rule; empty: the pack is silent.
    operators: list[SubscriberId] = []
    # A persisting condition is notified again at most once per this many minutes.
    renotify_minutes: float = Field(default=60, gt=0)
    # queue_backlog: messages waiting in one queue above this.
    backlog_threshold: int = Field(default=1000, ge=0)
    backlog_queues: list[str] = list(queues.ALL_QUEUES)
    # queue_delay: a canary waiting (or having waited) longer than this many seconds.
    delay_threshold_seconds: float = Field(default=60, gt=0)
    # Not dead_letter by default: deployments may consume it with their own tooling
    # (workers started with -X dead_letter), which would never run a canary.
    delay_queues: list[str] = [q for q in queues.ALL_QUEUES if q != queues.DEAD_LETTER]
    # dead_letter_growth: dead letters of one channel within the window above this.
    dead_letter_threshold: int = Field(default=10, ge=0)
    dead_letter_window_minutes: float = Field(default=15, gt=0)
    # delivery_failure_rate: failed share of one channel's attempts within the window.
    failure_rate_threshold: float = Field(default=0.2, ge=0, le=1)
    failure_window_minutes: float = Field(default=15, gt=0)
    failure_min_attempts: int = Field(default=20, ge=1)
    # no_worker: how long to wait for the first worker's pong.
    ping_timeout_seconds: float = Field(default=2.0, gt=0)
    # high_load: 5-minute load average per CPU core above this.
    load_per_core_threshold: float = Field(default=2.0, ge=0)

    @field_validator("backlog_queues", "delay_queues")
    @classmethod
    def _known_queues(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(queues.ALL_QUEUES))
        if unknown:
            raise ValueError(f"unknown queues {unknown}; known: {list(queues.ALL_QUEUES)}")
        return value


def window_start(now: datetime, minutes: float) -> str:
    """The renotify window ``now`` falls in, as a compact UTC timestamp for dedupe keys."""
    size = minutes * 60
    start = (now.timestamp() // size) * size
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")


class SystemRule(Rule):
    """A system rule: silent without operators; ``check`` yields its alarms."""

    pack = "system"
    Config = SystemConfig
    config: SystemConfig
    severity = "high"

    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        if not self.config.operators:
            return []
        return self.check(ctx)

    def check(self, ctx: RunContext) -> Iterable[Candidate]:
        raise NotImplementedError

    def alarm(self, ctx: RunContext, subject: str, data: dict, **numbers) -> Candidate:
        """One notification to every operator, worded by the built-in template named after
        the rule from ``data`` (clarion/templates/*/system.toml); ``numbers`` go to the
        metadata as they are."""
        window = window_start(ctx.now, self.config.renotify_minutes)
        return Candidate(
            recipients=self.config.operators,
            category=CATEGORY,
            type=self.key,
            severity=self.severity,
            template=self.key,
            data=data,
            metadata={"rule": self.key, "subject": subject, "window": window, **numbers},
            dedupe_key=f"system:{self.key}:{subject}:{window}",
            collapse_key=f"system:{self.key}:{subject}",
        )


class QueueBacklog(SystemRule):
    """Messages waiting in a queue (not yet taken by a worker) above ``backlog_threshold``.

    Counted through the broker connection: on Redis the LLEN of the queue's lists (one per
    priority step); a message a worker has prefetched or is running is no longer waiting.
    """

    key = "queue_backlog"
    description = "Too many messages waiting in a queue"
    every = 60

    def check(self, ctx: RunContext) -> Iterator[Candidate]:
        cfg = self.config
        with ctx.runtime.celery.connection_for_read() as conn:
            channel = conn.default_channel
            # kombu's own count (what its passive queue_declare reports): every priority
            # list on Redis, visible rows on SQL brokers. The public queue_declare is no
            # use here: on Redis it raises for an empty queue, whose list does not exist.
            waiting = {q: channel._size(q) for q in cfg.backlog_queues}
        for queue, count in waiting.items():
            if count > cfg.backlog_threshold:
                yield self.alarm(
                    ctx,
                    queue,
                    {"queue": queue, "waiting": count, "threshold": cfg.backlog_threshold},
                    queue=queue,
                    waiting=count,
                    threshold=cfg.backlog_threshold,
                )


class QueueDelay(SystemRule):
    """Messages wait in a queue longer than ``delay_threshold_seconds``, measured by a canary.

    Each run reads, per queue, the canary still in flight and the last one a worker ran,
    then sends a new canary where none is in flight (see :mod:`clarion.engine.canary`).
    It fires when the canary in flight was sent more than the threshold ago (no worker
    has taken it: the queue is stuck or has no consumer) or when the last canary waited
    more than the threshold before a worker ran it (the queue is slow). Needs a Redis
    broker and the ``clarion.engine.canary`` task on the workers; silent otherwise.
    """

    key = "queue_delay"
    description = "Messages wait too long in a queue"
    every = 60

    def check(self, ctx: RunContext) -> Iterator[Candidate]:
        cfg, app = self.config, ctx.runtime.celery
        with app.connection_for_write() as conn:
            client = canary.redis_of(conn)
            if client is None:
                ctx.log.info("queue_delay: the broker is not Redis; no canary")
                return
            readings = [canary.read(client, q) for q in cfg.delay_queues]
            for reading in readings:
                if reading.pending_since is None:
                    canary.probe(app, client, reading.queue, ctx.now)
        limit, now = cfg.delay_threshold_seconds, ctx.now.timestamp()
        for r in readings:
            waiting = None if r.pending_since is None else max(0.0, now - r.pending_since)
            stuck = waiting is not None and waiting > limit
            slow = r.last_delay is not None and r.last_delay > limit
            if not (stuck or slow):
                continue
            shown = {"queue": r.queue, "stuck": stuck, "waiting": waiting}
            shown |= {"last_delay": r.last_delay, "threshold": limit}
            yield self.alarm(
                ctx,
                r.queue,
                shown,
                queue=r.queue,
                pending_seconds=None if waiting is None else round(waiting, 3),
                last_delay_seconds=None if r.last_delay is None else round(r.last_delay, 3),
                threshold_seconds=limit,
            )


class DeadLetterGrowth(SystemRule):
    """New dead letters of one channel in the last ``dead_letter_window_minutes`` (created
    in ``(now - window, now]``) above ``dead_letter_threshold``; replayed ones count too."""

    key = "dead_letter_growth"
    description = "Dead letters are piling up"
    every = 300

    def check(self, ctx: RunContext) -> Iterator[Candidate]:
        cfg = self.config
        start = ctx.now - timedelta(minutes=cfg.dead_letter_window_minutes)
        stmt = (
            select(DeadLetter.channel, func.count())
            .where(DeadLetter.created_at > start, DeadLetter.created_at <= ctx.now)
            .group_by(DeadLetter.channel)
            .order_by(DeadLetter.channel)
        )
        with ctx.runtime.sessions() as session:
            counts = session.execute(stmt).all()
        for channel, count in counts:
            if count > cfg.dead_letter_threshold:
                shown = {"channel": channel, "count": count}
                shown |= {
                    "window_minutes": cfg.dead_letter_window_minutes,
                    "threshold": cfg.dead_letter_threshold,
                }
                yield self.alarm(
                    ctx,
                    channel,
                    shown,
                    channel=channel,
                    dead_letters=count,
                    window_minutes=cfg.dead_letter_window_minutes,
                    threshold=cfg.dead_letter_threshold,
                )


class DeliveryFailureRate(SystemRule):
    """Share of one channel's delivery attempts that failed, over the last
    ``failure_window_minutes`` (finished in ``(now - window, now]``), above
    ``failure_rate_threshold``, once the channel made ``failure_min_attempts`` attempts.

    Failed: outcome ``retry`` (the delivery went to ``failed``) or ``dead``. ``gone`` (the
    target no longer exists, e.g. an expired push subscription) is a finished attempt but
    not a failure: it is the user's doing, and the channel already deactivates the target.
    """

    key = "delivery_failure_rate"
    description = "Too many delivery attempts fail"
    every = 300
    FAILED = ("retry", "dead")

    def check(self, ctx: RunContext) -> Iterator[Candidate]:
        cfg = self.config
        start = ctx.now - timedelta(minutes=cfg.failure_window_minutes)
        a = DeliveryAttempt
        stmt = (
            select(Delivery.channel, a.outcome, func.count())
            .join(Delivery, Delivery.id == a.delivery_id)
            .where(a.finished_at > start, a.finished_at <= ctx.now)
            .group_by(Delivery.channel, a.outcome)
        )
        with ctx.runtime.sessions() as session:
            rows = session.execute(stmt).all()
        totals: dict[str, int] = {}
        failed: dict[str, int] = {}
        for channel, outcome, count in rows:
            totals[channel] = totals.get(channel, 0) + count
            if outcome in self.FAILED:
                failed[channel] = failed.get(channel, 0) + count
        for channel in sorted(totals):
            total, bad = totals[channel], failed.get(channel, 0)
            rate = bad / total
            if total < cfg.failure_min_attempts or rate <= cfg.failure_rate_threshold:
                continue
            shown = {"channel": channel, "failed": bad, "attempts": total, "rate": rate}
            shown |= {
                "window_minutes": cfg.failure_window_minutes,
                "threshold": cfg.failure_rate_threshold,
                "min_attempts": cfg.failure_min_attempts,
            }
            yield self.alarm(
                ctx,
                channel,
                shown,
                channel=channel,
                failed=bad,
                attempts=total,
                rate=round(rate, 4),
                window_minutes=cfg.failure_window_minutes,
                threshold=cfg.failure_rate_threshold,
            )


class NoWorker(SystemRule):
    """No Celery worker answers a ping within ``ping_timeout_seconds``.

    Run by beat, this rule itself needs a worker on the ``engine`` queue, so it fires only
    when it runs somewhere else: ``clarion rules run no_worker`` from cron or a systemd
    timer, or ``POST /v1/rules/no_worker/run``. Silent on brokers without broadcast (the
    embedded SQLite broker, whose worker runs in the same process anyway).
    """

    key = "no_worker"
    description = "No worker answers"
    every = 60
    severity = "critical"

    def check(self, ctx: RunContext) -> Iterator[Candidate]:
        cfg, app = self.config, ctx.runtime.celery
        with app.connection_for_read() as conn:
            if "fanout" not in conn.transport.implements.exchange_type:
                ctx.log.info("no_worker: the broker has no broadcast; no ping")
                return
        # limit=1: one pong is enough, do not wait out the timeout when workers are up.
        if app.control.ping(timeout=cfg.ping_timeout_seconds, limit=1):
            return
        yield self.alarm(
            ctx,
            "all",
            {"timeout_seconds": cfg.ping_timeout_seconds},
            workers=0,
            timeout_seconds=cfg.ping_timeout_seconds,
        )


class HighLoad(SystemRule):
    """The 5-minute load average per CPU core of the host running this rule above
    ``load_per_core_threshold``.

    That host is the one whose worker took the rule from the ``engine`` queue: on one
    machine it is the machine; across several it is one of them, named in the alarm (and
    in its dedupe key). Load counts every runnable process (PostgreSQL and Redis too when
    they share the host), so it says "this host is saturated", not "Clarion is busy".
    """

    key = "high_load"
    description = "The host is overloaded"
    every = 60

    def measure(self) -> tuple[float, int]:
        """The 5-minute load average and the number of CPU cores of this host."""
        return os.getloadavg()[1], os.cpu_count() or 1

    def check(self, ctx: RunContext) -> Iterator[Candidate]:
        cfg = self.config
        load, cores = self.measure()
        per_core = load / cores
        if per_core <= cfg.load_per_core_threshold:
            return
        host = socket.gethostname()
        shown = {"host": host, "load": load, "cores": cores, "per_core": per_core}
        yield self.alarm(
            ctx,
            host,
            {**shown, "threshold": cfg.load_per_core_threshold},
            host=host,
            load_5m=round(load, 2),
            cores=cores,
            load_per_core=round(per_core, 3),
            threshold=cfg.load_per_core_threshold,
        )


RULES = [QueueBacklog, QueueDelay, DeadLetterGrowth, DeliveryFailureRate, NoWorker, HighLoad]
