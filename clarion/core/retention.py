"""Retention: delete what has outlived its period, in short bounded batches (on beat).

Each kind of record is one pass: an index range walked in order (``scan``) and, of the
rows found, those that may go (``doomed``, checked again inside the DELETE, so a row that
changed in between stays). A batch is one short transaction: select up to ``batch`` keys,
delete those still doomed. Passes run in turn until the run's time budget is spent; the
next run starts again from the oldest rows, so a run that stops midway (budget, crash,
lock timeout) loses nothing and a second run deletes only what the first left.

Never deleted: a notification with a delivery still to make (pending, sending, failed
with a retry due, deferred, held for a digest), a scheduled send not yet released, a
fan-out still running, anything younger than its period. Deleting a notification deletes
its deliveries, their attempts and dead letters (foreign keys ON DELETE CASCADE).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    exists,
    literal,
    null,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import FromClause

from clarion.db.dialect import dml
from clarion.db.models import (
    Delivery,
    DeliveryAttempt,
    Event,
    FailedRequest,
    Fanout,
    InboxEvent,
    Notification,
    RetentionCursor,
    RuleRun,
    ScheduledNotification,
)
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings

log = logging.getLogger(__name__)

# Delivery statuses that still have work to do: their notification is kept.
OPEN_DELIVERY = ("pending", "sending", "failed", "deferred", "held")
# A batch waits at most this long for a row lock (a user marking an old row read): it
# gives up and the next run tries again, instead of queueing writers behind it.
LOCK_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class Pass:
    kind: str
    table: FromClause
    key: tuple[ColumnElement[Any], ...]  # the primary key: what the DELETE names
    order: tuple[ColumnElement[Any], ...]  # the walk's order, unique and served by an index
    scan: ColumnElement[bool]  # the index range walked
    doomed: ColumnElement[bool] | None = None  # of those, the rows that go (None: all)
    monotonic: bool = False  # age follows ``order``: the first row kept ends the pass


@dataclass
class Report:
    deleted: dict[str, int] = field(default_factory=dict)
    # False when the budget ran out (or a lock was busy) with rows perhaps left to delete.
    done: bool = True
    seconds: float = 0.0
    longest_batch_seconds: float = 0.0


def id_floor(at: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond ``at``: every id made before it sorts lower."""
    return uuid.UUID(int=(int(at.timestamp() * 1000) & ((1 << 48) - 1)) << 80)


def _no_open_delivery() -> ColumnElement[bool]:
    return ~exists().where(
        Delivery.notification_id == Notification.id, Delivery.status.in_(OPEN_DELIVERY)
    )


def _notifications(settings: Settings, now: datetime) -> Pass | None:
    """Notifications older than their category's period (its override, else the default)."""
    cutoffs = {c: now - timedelta(days=d) for c, d in settings.retention_category_days.items()}
    default = now - timedelta(days=settings.retention_days) if settings.retention_days else None
    finite = [t for c, t in cutoffs.items() if settings.retention_category_days[c]]
    if default is not None:
        finite.append(default)
    if not finite:
        return None
    whens = [
        (Notification.category == c, literal(t) if settings.retention_category_days[c] else null())
        for c, t in cutoffs.items()
    ]
    fallback = literal(default) if default is not None else null()
    cutoff = case(*whens, else_=fallback) if whens else fallback
    table = Notification.__table__
    return Pass(
        "notifications",
        table,
        key=(table.c.id,),
        order=(table.c.id,),
        # Ids are UUIDv7 made at acceptance, before the row is stored: every row created
        # before the latest cutoff has a lower id, so the primary key bounds the walk.
        scan=Notification.id < id_floor(max(finite)),
        doomed=and_(Notification.created_at < cutoff, _no_open_delivery()),
    )


def _passes(settings: Settings, now: datetime) -> list[Pass]:
    def cutoff(kind: str) -> datetime | None:
        days = settings.record_days(kind)
        return now - timedelta(days=days) if days else None

    n, attempts, inbox = Notification.__table__, DeliveryAttempt.__table__, InboxEvent.__table__
    events, runs, failed = Event.__table__, RuleRun.__table__, FailedRequest.__table__
    scheduled, fanouts = ScheduledNotification.__table__, Fanout.__table__
    found: list[Pass | None] = [_notifications(settings, now)]
    if (t := cutoff("deleted")) is not None:
        found.append(
            Pass(
                "deleted",
                n,
                key=(n.c.id,),
                order=(n.c.deleted_at, n.c.id),
                scan=and_(n.c.deleted_at.is_not(None), n.c.deleted_at < t),
                doomed=_no_open_delivery(),
            )
        )
    if (t := cutoff("delivery_attempts")) is not None:
        found.append(
            Pass(
                "delivery_attempts",
                attempts,
                key=(attempts.c.id,),
                order=(attempts.c.id,),
                scan=true(),
                doomed=attempts.c.finished_at < t,
                monotonic=True,
            )
        )
    if (t := cutoff("inbox_events")) is not None:
        found.append(
            Pass(
                "inbox_events",
                inbox,
                key=(inbox.c.recipient_id, inbox.c.seq),
                order=(inbox.c.created_at,),
                scan=inbox.c.created_at < t,
            )
        )
    if (t := cutoff("events")) is not None:
        found.append(
            Pass(
                "events",
                events,
                key=(events.c.id,),
                order=(events.c.received_at,),
                scan=events.c.received_at < t,
            )
        )
    for kind, table, column in (
        ("rule_runs", runs, runs.c.started_at),
        ("failed_requests", failed, failed.c.created_at),
    ):
        if (t := cutoff(kind)) is not None:
            found.append(
                Pass(
                    kind,
                    table,
                    key=(table.c.id,),
                    order=(table.c.id,),
                    scan=true(),
                    doomed=column < t,
                    monotonic=True,
                )
            )
    if (t := cutoff("scheduled")) is not None:
        # Accepted (id made) before the cutoff, else it cannot have ended before it.
        found.append(
            Pass(
                "scheduled",
                scheduled,
                key=(scheduled.c.id,),
                order=(scheduled.c.id,),
                scan=scheduled.c.id < id_floor(t),
                doomed=and_(
                    scheduled.c.status.in_(("released", "cancelled")),
                    scheduled.c.updated_at < t,
                ),
            )
        )
    if (t := cutoff("fanouts")) is not None:
        found.append(
            Pass(
                "fanouts",
                fanouts,
                key=(fanouts.c.request_id,),
                order=(fanouts.c.request_id,),
                scan=fanouts.c.request_id < id_floor(t),
                doomed=and_(fanouts.c.status == "enqueued", fanouts.c.finished_at < t),
            )
        )
    return [p for p in found if p is not None]


def _short_locks(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))


def _matches(key: tuple[ColumnElement[Any], ...], rows: list[tuple]) -> ColumnElement[bool]:
    if len(key) == 1:
        return key[0].in_([r[0] for r in rows])
    return tuple_(*key).in_(rows)


def _encode(values: tuple) -> list[str]:
    return [v.isoformat() if isinstance(v, datetime) else str(v) for v in values]


def _decode(order: tuple[ColumnElement[Any], ...], position: list[str]) -> tuple:
    kinds = [c.type.python_type for c in order]
    return tuple(
        datetime.fromisoformat(v) if t is datetime else t(v)
        for t, v in zip(kinds, position, strict=True)
    )


def _cursor(session: Session, p: Pass) -> tuple | None:
    row = session.get(RetentionCursor, p.kind)
    if row is None or len(row.position) != len(p.order):
        return None
    return _decode(p.order, row.position)


def _save_cursor(session: Session, p: Pass, after: tuple | None) -> None:
    if after is None:
        session.execute(delete(RetentionCursor).where(RetentionCursor.kind == p.kind))
        return
    row = session.get(RetentionCursor, p.kind)
    if row is None:
        row = RetentionCursor(kind=p.kind)
        session.add(row)
    row.position, row.updated_at = _encode(after), utcnow()


class _Limit:
    """The run's bounds: a time budget, and (tests, benchmarks) a number of batches."""

    def __init__(self, seconds: float, batches: int | None) -> None:
        self.deadline = time.monotonic() + seconds
        self.batches = batches

    def another(self) -> bool:
        if self.batches is not None:
            if self.batches <= 0:
                return False
            self.batches -= 1
        return time.monotonic() < self.deadline


def _run_pass(
    p: Pass, *, sessions: sessionmaker[Session], batch: int, limit: _Limit, report: Report
) -> bool:
    """Delete this pass's rows until none is left (True) or the run's bounds are reached
    (False). A walk that keeps rows goes on, in the next run, after the last row it saw:
    rows it keeps (a longer period, an open delivery) are walked once per cycle, not once
    per run, so a run always gets further."""
    columns = list(dict.fromkeys((*p.order, *p.key)))
    order_at = [columns.index(c) for c in p.order]
    key_at = [columns.index(c) for c in p.key]
    resumable = p.doomed is not None and not p.monotonic
    after: tuple | None = None
    if resumable:
        with sessions() as session:
            after = _cursor(session, p)
    while limit.another():
        started = time.monotonic()
        try:
            with transaction(sessions) as session:
                _short_locks(session)
                query = select(*columns).where(p.scan)
                if after is not None:
                    query = query.where(tuple_(*p.order) > tuple_(*after))
                rows = session.execute(query.order_by(*p.order).limit(batch)).all()
                gone = 0
                if rows:
                    keys = [tuple(r[i] for i in key_at) for r in rows]
                    stmt = delete(p.table).where(_matches(p.key, keys))
                    if p.doomed is not None:
                        stmt = stmt.where(p.doomed)
                    gone = dml(session.execute(stmt)).rowcount
                finished = len(rows) < batch or (p.monotonic and gone < len(rows))
                if p.doomed is not None:  # rows kept stay behind the cursor
                    after = None if finished else tuple(rows[-1][i] for i in order_at)
                if resumable:
                    _save_cursor(session, p, after)
        except OperationalError as exc:  # a lock held longer than LOCK_TIMEOUT_MS
            if "lock timeout" not in str(exc):
                raise
            log.info("retention %s: a row was busy, the next run goes on", p.kind)
            return False
        report.longest_batch_seconds = max(report.longest_batch_seconds, time.monotonic() - started)
        report.deleted[p.kind] = report.deleted.get(p.kind, 0) + gone
        if finished:
            return True
    return False


def run(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    now: datetime | None = None,
    budget_seconds: float | None = None,
    max_batches: int | None = None,
) -> Report:
    """One retention run: every pass in turn, within the time budget (and at most
    ``max_batches`` statements). Idempotent."""
    started = time.monotonic()
    budget = settings.retention_budget_seconds if budget_seconds is None else budget_seconds
    limit = _Limit(budget, max_batches)
    report = Report()
    for p in _passes(settings, now or utcnow()):
        report.deleted.setdefault(p.kind, 0)
        if not _run_pass(
            p, sessions=sessions, batch=settings.retention_batch, limit=limit, report=report
        ):
            report.done = False
            break
    report.seconds = time.monotonic() - started
    if any(report.deleted.values()):
        log.info("retention deleted %s in %.1fs", report.deleted, report.seconds)
    return report
