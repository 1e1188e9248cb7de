"""A recipient's inbox as the recipient sees and changes it: the page shown, the unread
counts, seen/read/delete, snoozes that end, and the changes (inbox events) a resuming
client replays. Storing notifications and their deliveries is ``clarion.db.notifications``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import BindParameter, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import dml, is_postgres, one_of_bound
from clarion.db.models import InboxEvent, Notification
from clarion.ids import utcnow


@dataclass(frozen=True)
class InboxFilter:
    category: str | None = None
    severity: str | None = None
    status: str = "all"  # unread | read | unseen | all
    archived: bool = False
    snoozed: bool = False  # True: only the snoozed ones (hidden otherwise)


@dataclass
class Counts:
    """The bell's numbers: unread per category, and how many of those were never seen."""

    by_category: dict[str, int] = field(default_factory=dict)
    unseen: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_category.values())


def unexpired(now: datetime | BindParameter | None):
    """Not expired by ``now`` (a datetime or a bound parameter; None: the current time)."""
    at = utcnow() if now is None else now
    return or_(Notification.expires_at.is_(None), Notification.expires_at > at)


def _shown(now: datetime | BindParameter | None = None):
    """In an inbox: meant for the inbox, not deleted, not expired."""
    return (Notification.in_inbox.is_(True), Notification.deleted_at.is_(None), unexpired(now))


def _visible(recipient_id: str, now: datetime | None = None):
    """In the recipient's inbox: theirs, and shown."""
    return (Notification.recipient_id == recipient_id, *_shown(now))


# Not snoozed: "snoozed" is "snoozed_until is set" (the beat task clears it once passed).
_UNSNOOZED = Notification.snoozed_until.is_(None)
# Neither seen nor read (reading a notification is seeing it).
_UNSEEN = (Notification.seen_at.is_(None), Notification.read_at.is_(None))


def get_for_recipient(
    *,
    session: Session,
    recipient_id: str,
    id: uuid.UUID,
    now: datetime | None = None,
    for_update: bool = False,
) -> Notification | None:
    """The notification only if it is in this recipient's inbox (see ``_visible``), snoozed
    or not; ``for_update`` locks its row until commit."""
    query = select(Notification).where(Notification.id == id, *_visible(recipient_id, now))
    if for_update:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def get_of_recipient(
    *, session: Session, recipient_id: str, id: uuid.UUID, for_update: bool = False
) -> Notification | None:
    """The recipient's notification unless deleted, in the inbox or not (a push-only one
    can be clicked too); ``for_update`` locks its row until commit."""
    query = select(Notification).where(
        Notification.id == id,
        Notification.recipient_id == recipient_id,
        Notification.deleted_at.is_(None),
    )
    if for_update:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def page(
    *,
    session: Session,
    recipient_id: str,
    limit: int,
    before: uuid.UUID | None,
    filters: InboxFilter,
    now: datetime | None = None,
) -> list[Notification]:
    """Newest first, keyset-paginated (no OFFSET); ``before`` is the last id of a page.

    "Newest" is arrival in the inbox: the recipient's sequence, the order live events come
    in. A scheduled notification arrives when it is released, long after its id was made,
    so an order by id would bury it among the notifications of the day it was sent."""
    query = select(Notification).where(*_visible(recipient_id, now))
    if before is not None:
        anchor = select(Notification.seq).where(
            Notification.id == before, Notification.recipient_id == recipient_id
        )
        query = query.where(Notification.seq < anchor.scalar_subquery())
    if filters.category:
        query = query.where(Notification.category == filters.category)
    if filters.severity:
        query = query.where(Notification.severity == filters.severity)
    if filters.status == "unread":
        query = query.where(Notification.read_at.is_(None))
    elif filters.status == "read":
        query = query.where(Notification.read_at.is_not(None))
    elif filters.status == "unseen":
        query = query.where(*_UNSEEN)
    if filters.snoozed:
        query = query.where(Notification.snoozed_until.is_not(None))
    else:
        query = query.where(_UNSNOOZED)
    if filters.archived:
        query = query.where(Notification.archived_at.is_not(None))
    else:
        query = query.where(Notification.archived_at.is_(None))
    rows = session.execute(query.order_by(Notification.seq.desc()).limit(limit))
    return list(rows.scalars())


def unread_counts(*, session: Session, recipient_id: str, now: datetime | None = None) -> Counts:
    """Unread, unarchived, unsnoozed inbox notifications per category, and the unseen ones
    among them (unseen implies unread): one query over the unread partial index."""
    return unread_counts_of(session=session, recipient_ids=[recipient_id], now=now).get(
        recipient_id, Counts()
    )


@lru_cache(maxsize=2)
def _unread_counts_statement(postgres: bool):
    # Built once: a herd of connections starting reads this per batch, and building the
    # statement cost more CPU than running it (docs/benchmarks/stream.md).
    return (
        select(
            Notification.recipient_id,
            Notification.category,
            func.count(),
            func.count().filter(Notification.seen_at.is_(None)),
        )
        .where(
            one_of_bound(postgres, Notification.recipient_id, "ids"),
            *_shown(bindparam("now")),
            Notification.read_at.is_(None),
            Notification.archived_at.is_(None),
            _UNSNOOZED,
        )
        .group_by(Notification.recipient_id, Notification.category)
    )


def unread_counts_of(
    *, session: Session, recipient_ids: Sequence[str], now: datetime | None = None
) -> dict[str, Counts]:
    """:func:`unread_counts` of several recipients in one query; those with none are absent."""
    query = _unread_counts_statement(is_postgres(session))
    rows = session.execute(query, {"ids": list(recipient_ids), "now": now or utcnow()})
    counts: dict[str, Counts] = {}
    for recipient, category, unread, unseen in rows:
        found = counts.setdefault(recipient, Counts())
        found.by_category[category] = unread
        found.unseen += unseen
    return counts


def mark_all_read(
    *, session: Session, recipient_id: str, category: str | None, now: datetime
) -> int:
    """Read (and so seen) every unread, unsnoozed notification in the inbox."""
    stmt = update(Notification).where(
        *_visible(recipient_id, now), Notification.read_at.is_(None), _UNSNOOZED
    )
    if category:
        stmt = stmt.where(Notification.category == category)
    seen = func.coalesce(Notification.seen_at, now)
    return dml(session.execute(stmt.values(read_at=now, seen_at=seen))).rowcount


def mark_seen(
    *,
    session: Session,
    recipient_id: str,
    ids: Sequence[uuid.UUID] | None,
    up_to: int | None,
    now: datetime,
) -> list[uuid.UUID]:
    """Seen: these ids, or every notification up to the cursor ``up_to``; only the ones
    still unseen change. Returns their ids."""
    stmt = update(Notification).where(*_visible(recipient_id, now), *_UNSEEN)
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(list(ids)))
    else:
        stmt = stmt.where(Notification.seq <= up_to, _UNSNOOZED)
    rows = session.execute(stmt.values(seen_at=now).returning(Notification.id))
    return list(rows.scalars())


def delete_read(*, session: Session, recipient_id: str, category: str | None, now: datetime) -> int:
    """Soft-delete the read ones the inbox shows (not archived, not snoozed)."""
    stmt = update(Notification).where(
        *_visible(recipient_id, now),
        Notification.read_at.is_not(None),
        Notification.archived_at.is_(None),
        _UNSNOOZED,
    )
    if category:
        stmt = stmt.where(Notification.category == category)
    return dml(session.execute(stmt.values(deleted_at=now))).rowcount


def unsnooze_due(*, session: Session, now: datetime, limit: int) -> list[Notification]:
    """Snoozes that have ended → back in the inbox as new (unread, unseen); returns the rows.

    One conditional statement: a row is taken only while its snooze is still set and
    passed, and rows another run has locked are skipped, so two runs at once, or a rerun,
    release each snooze once."""
    due = (
        select(Notification.id)
        .where(Notification.snoozed_until <= now)
        .order_by(Notification.snoozed_until)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Notification)
        .where(Notification.id.in_(due.scalar_subquery()), Notification.snoozed_until <= now)
        .values(snoozed_until=None, seen_at=None, read_at=None)
        .returning(Notification)
    )
    return list(session.scalars(stmt, execution_options={"synchronize_session": False}))


def soft_delete(*, session: Session, recipient_id: str, id: uuid.UUID, now: datetime) -> bool:
    stmt = update(Notification).where(Notification.id == id, *_visible(recipient_id, now))
    return dml(session.execute(stmt.values(deleted_at=now))).rowcount > 0


def created_after(
    *, session: Session, recipient_id: str, since: int, limit: int, now: datetime | None = None
) -> list[Notification]:
    """A recipient's inbox notifications with seq > since, in seq order.

    Rows never meant for the inbox and rows expired by now are left out, as in the inbox
    listing (their numbers are simply skipped); deleted ones stay: the delete event that
    follows them tells the client."""
    query = select(Notification).where(
        Notification.recipient_id == recipient_id,
        Notification.seq > since,
        Notification.in_inbox.is_(True),
        unexpired(now),
    )
    return list(session.scalars(query.order_by(Notification.seq).limit(limit)))


def record_event(
    *,
    session: Session,
    recipient_id: str,
    seq: int,
    type: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    session.execute(
        insert(InboxEvent).values(
            recipient_id=recipient_id, seq=seq, type=type, data=data, created_at=now
        )
    )


def record_events(*, session: Session, rows: list[dict[str, Any]]) -> None:
    """Store several inbox events at once (recipient_id, seq, type, data, created_at)."""
    if rows:
        session.execute(insert(InboxEvent), rows)


def events_after(
    *, session: Session, recipient_id: str, since: int, limit: int
) -> list[InboxEvent]:
    """A recipient's inbox changes with seq > since, in seq order."""
    query = select(InboxEvent).where(
        InboxEvent.recipient_id == recipient_id, InboxEvent.seq > since
    )
    return list(session.scalars(query.order_by(InboxEvent.seq).limit(limit)))
