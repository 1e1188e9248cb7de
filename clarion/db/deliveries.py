"""Delivery rows: the conditional updates of their state machine, attempts, dead letters."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import dml
from clarion.db.models import (
    AuditEntry,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscriber,
)

# A countdown task may fire a moment before the row's retry time on another clock.
CLOCK_TOLERANCE = timedelta(seconds=1)
# Statuses the sweeper watches: each has a task to come, or is due at next_attempt_at
# (a deferred one at the end of its quiet hours). Held ones wait for their digest instead.
OPEN = ("pending", "sending", "failed", "deferred")
# Claimed only once next_attempt_at has come (a pending one is claimed at once).
CLAIMED_WHEN_DUE = ("failed", "sending", "deferred")


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    notification_id: uuid.UUID
    target: str
    attempt: int
    event: str = ""  # Delivery.event: "" or "action:<id>"


_DELIVERIES = Delivery.__table__


# Built once: a statement built per call costs more in SQLAlchemy than it runs in the
# database.
_CLAIM = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        or_(
            _DELIVERIES.c.status == "pending",
            and_(
                _DELIVERIES.c.status.in_(CLAIMED_WHEN_DUE),
                _DELIVERIES.c.next_attempt_at <= bindparam("due"),
            ),
        ),
    )
    .values(
        status="sending",
        attempts=_DELIVERIES.c.attempts + 1,
        next_attempt_at=bindparam("lease_end"),
        updated_at=bindparam("now"),
    )
    .returning(
        _DELIVERIES.c.id,
        _DELIVERIES.c.notification_id,
        _DELIVERIES.c.target,
        _DELIVERIES.c.attempts,
        _DELIVERIES.c.event,
    )
)


def claim(
    *, session: Session, ids: Sequence[uuid.UUID], now: datetime, lease: timedelta
) -> list[Claimed]:
    """pending, due failed or deferred, or lease-expired sending → sending; only one caller
    wins a row. One statement."""
    rows = session.execute(
        _CLAIM,
        {"ids": list(ids), "due": now + CLOCK_TOLERANCE, "lease_end": now + lease, "now": now},
    ).all()
    return [Claimed(*row) for row in rows]


_RENEW = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        _DELIVERIES.c.status == "sending",
        # Still under this caller's claim: another worker's claim set another lease end.
        _DELIVERIES.c.next_attempt_at == bindparam("held_until"),
    )
    .values(next_attempt_at=bindparam("lease_end"), updated_at=bindparam("now"))
    .returning(_DELIVERIES.c.id)
)


def renew(
    *,
    session: Session,
    ids: Sequence[uuid.UUID],
    held_until: datetime,
    now: datetime,
    lease: timedelta,
) -> set[uuid.UUID]:
    """Extend the lease of claimed rows not sent yet, those still held under the lease
    that ends at ``held_until``; returns their ids (the others were taken over). One
    statement."""
    rows = session.execute(
        _RENEW, {"ids": list(ids), "held_until": held_until, "lease_end": now + lease, "now": now}
    ).all()
    return {row[0] for row in rows}


def contexts(
    *, session: Session, notification_ids: set[uuid.UUID]
) -> dict[uuid.UUID, tuple[Notification, Subscriber]]:
    """The notifications of claimed deliveries with their recipients, in one query."""
    rows = session.execute(
        select(Notification, Subscriber)
        .join(Subscriber, Subscriber.id == Notification.recipient_id)
        .where(Notification.id.in_(notification_ids))
    ).all()
    return {n.id: (n, s) for n, s in rows}


def insert_many(*, session: Session, rows: list[dict[str, Any]]) -> None:
    """New delivery rows (the webhook events of an action click)."""
    if rows:
        session.execute(insert(Delivery), rows)


def skip_pending(*, session: Session, ids: Sequence[uuid.UUID], reason: str, now) -> int:
    """Move pending deliveries to skipped with the reason; others are left alone."""
    return dml(
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == "pending")
            .values(status="skipped", last_error=reason, next_attempt_at=None, updated_at=now)
        )
    ).rowcount


# Not yet handed to a provider: these can still be called off (collapse, expiry, digests).
NOT_STARTED = ("pending", "failed", "deferred", "held")


def skip_open(*, session: Session, reasons: dict[uuid.UUID, str], now: datetime) -> None:
    """Skip the not-yet-sent deliveries of these notifications, each with its reason.

    One in flight (``sending``) is left to finish: its send may already be with the
    provider. The webhook events of action clicks are the producer's feedback, not the
    notification: they still go."""
    table = Delivery.__table__
    session.execute(
        update(table)
        # An expanding IN cannot run as executemany: spell the statuses out.
        .where(
            table.c.notification_id == bindparam("nid"),
            or_(*(table.c.status == status for status in NOT_STARTED)),
            table.c.event == "",
        )
        .values(
            status="skipped", last_error=bindparam("reason"), next_attempt_at=None, updated_at=now
        ),
        [{"nid": nid, "reason": reason} for nid, reason in reasons.items()],
    )


def take_due(
    *, session: Session, now: datetime, recheck: timedelta, limit: int
) -> list[tuple[uuid.UUID, str, str]]:
    """Open deliveries past their next_attempt_at → pending again, re-checked after
    ``recheck``. Returns (id, channel, previous status)."""
    due = session.execute(
        select(Delivery.id, Delivery.channel, Delivery.status)
        .where(Delivery.status.in_(OPEN), Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if due:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([d[0] for d in due]))
            .values(status="pending", next_attempt_at=now + recheck, updated_at=now)
        )
    return [tuple(d) for d in due]


def bring_forward(*, session: Session, channel: str, now: datetime, limit: int) -> int:
    """A channel's retries waiting for their backoff → due now (its provider answers again);
    the sweeper then enqueues them. Returns how many."""
    waiting = (
        select(Delivery.id)
        .where(
            Delivery.status == "failed",
            Delivery.next_attempt_at > now,
            Delivery.channel == channel,
        )
        .limit(limit)
        .scalar_subquery()
    )
    done = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(waiting), Delivery.status == "failed")
        .values(next_attempt_at=now, updated_at=now)
    )
    return dml(done).rowcount or 0


def get(*, session: Session, id: uuid.UUID) -> Delivery | None:
    return session.get(Delivery, id)


def attempts_of(*, session: Session, ids: Sequence[uuid.UUID]) -> list[DeliveryAttempt]:
    return list(
        session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
            .order_by(DeliveryAttempt.id)
        )
    )


# -- dead letters ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operator means. ``status``: open (not replayed), replayed, all."""

    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error_contains: str | None = None
    status: str = "open"
    ids: tuple[int, ...] | None = None

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.ids is not None:
            clauses.append(DeadLetter.id.in_(self.ids))
        if self.channel:
            clauses.append(DeadLetter.channel == self.channel)
        if self.since:
            clauses.append(DeadLetter.created_at >= self.since)
        if self.until:
            clauses.append(DeadLetter.created_at < self.until)
        if self.error_contains:
            clauses.append(DeadLetter.error.contains(self.error_contains, autoescape=True))
        if self.status == "open":
            clauses.append(DeadLetter.replayed_at.is_(None))
        elif self.status == "replayed":
            clauses.append(DeadLetter.replayed_at.is_not(None))
        return clauses


def dead_letters(
    *, session: Session, where: DeadLetterFilter, limit: int, before_id: int | None = None
) -> list[DeadLetter]:
    """Newest first; ``before_id`` pages backwards."""
    query = select(DeadLetter).where(*where.where())
    if before_id is not None:
        query = query.where(DeadLetter.id < before_id)
    return list(session.scalars(query.order_by(DeadLetter.id.desc()).limit(limit)))


def dead_letter(*, session: Session, id: int) -> DeadLetter | None:
    return session.get(DeadLetter, id)


def revive(
    *, session: Session, where: DeadLetterFilter, now, actor, recheck
) -> dict[str, list[uuid.UUID]]:
    """Open dead letters → replayed, their dead deliveries → pending with fresh attempts.

    Returns the revived delivery ids by channel, for dispatch after commit.
    """
    query = select(DeadLetter).where(*where.where(), DeadLetter.replayed_at.is_(None))
    letters = list(session.scalars(query.with_for_update(skip_locked=True)))
    if not letters:
        return {}
    revived = session.execute(
        update(Delivery)
        .where(Delivery.id.in_([dl.delivery_id for dl in letters]), Delivery.status == "dead")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=now + recheck,
            last_error=None,
            updated_at=now,
        )
        .returning(Delivery.id, Delivery.channel)
    ).all()
    for letter in letters:
        letter.replayed_at, letter.replayed_by = now, actor
    by_channel: dict[str, list[uuid.UUID]] = {}
    for delivery_id, channel in revived:
        by_channel.setdefault(channel, []).append(delivery_id)
    return by_channel


def purge_dead_letters(*, session: Session, where: DeadLetterFilter) -> int:
    return dml(session.execute(delete(DeadLetter).where(*where.where()))).rowcount


def audit(
    *, session: Session, actor: str, action: str, detail: dict[str, Any], count: int, now
) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, detail=detail, count=count, created_at=now)
    session.add(entry)
    session.flush()
    return entry
