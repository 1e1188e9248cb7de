"""Inbox changes made by the end user, each recorded as a resumable event.

Every change takes the next number of the recipient's sequence in the same transaction
(under the subscriber's row lock, like ``create``), is stored in ``inbox_events`` and,
after commit, is published with the new unread count, so every other tab and device of
the user follows, and one that was offline catches up from its cursor.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clarion.core.schemas import NotificationPublic
from clarion.db import recipient_inbox, subscribers
from clarion.db.models import Notification
from clarion.db.recipient_inbox import Counts

UPDATED, UNSNOOZED = "notification.updated", "notification.unsnoozed"


def _record(
    session: Session, recipient_id: str, data: dict[str, Any], now: datetime, type: str = UPDATED
) -> dict:
    seq = subscribers.bump_seq(session=session, id=recipient_id)
    recipient_inbox.record_event(
        session=session, recipient_id=recipient_id, seq=seq, type=type, data=data, now=now
    )
    return {"type": type, "recipient": recipient_id, "cursor": seq, "data": data}


def updated_event(recipient_id: str, seq: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": UPDATED, "recipient": recipient_id, "cursor": seq, "data": data}


def public(row: Notification) -> dict[str, Any]:
    """The item as the inbox shows it, as JSON (the data of ``notification.unsnoozed``)."""
    return NotificationPublic.model_validate(row).model_dump(mode="json")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Change:
    """What a PATCH asks: None leaves a flag as it is. Reading a notification is seeing it;
    ``snooze`` hides it until then, ``unsnooze`` brings it back now."""

    read: bool | None = None
    archived: bool | None = None
    seen: bool | None = None
    snooze: datetime | None = None
    unsnooze: bool = False


def _flags(row: Notification) -> tuple:
    return (row.read_at, row.archived_at, row.seen_at, row.snoozed_until)


def set_flags(
    *, session: Session, recipient_id: str, id: uuid.UUID, change: Change, now: datetime
) -> tuple[Notification, dict | None] | None:
    """Apply a PATCH; None when the notification is not in this recipient's inbox. The event
    is None when nothing changed, ``notification.unsnoozed`` (the item) when the snooze
    was lifted, else ``notification.updated`` with every flag."""
    row = recipient_inbox.get_for_recipient(session=session, recipient_id=recipient_id, id=id)
    if row is None:
        return None
    before = _flags(row)
    if change.seen is not None:
        row.seen_at = (row.seen_at or now) if change.seen else None
    if change.read is not None:
        row.read_at = (row.read_at or now) if change.read else None
        if change.read:
            row.seen_at = row.seen_at or now
    if change.archived is not None:
        row.archived_at = (row.archived_at or now) if change.archived else None
    if change.snooze is not None:
        row.snoozed_until = change.snooze
    elif change.unsnooze:
        row.snoozed_until = None
    if _flags(row) == before:
        return row, None
    if before[3] is not None and row.snoozed_until is None:
        return row, _record(session, recipient_id, public(row), now, UNSNOOZED)
    data = {
        "ids": [str(id)],
        "read_at": _iso(row.read_at),
        "archived_at": _iso(row.archived_at),
        "seen_at": _iso(row.seen_at),
        "snoozed_until": _iso(row.snoozed_until),
    }
    return row, _record(session, recipient_id, data, now)


def mark_seen(
    *,
    session: Session,
    recipient_id: str,
    ids: list[uuid.UUID] | None,
    up_to: int | None,
    now: datetime,
) -> tuple[int, dict | None]:
    """Seen: these ids (the event lists the ones that changed) or all up to a cursor."""
    changed = recipient_inbox.mark_seen(
        session=session, recipient_id=recipient_id, ids=ids, up_to=up_to, now=now
    )
    if not changed:
        return 0, None
    if ids is not None:
        data: dict[str, Any] = {"ids": [str(i) for i in changed], "seen_at": _iso(now)}
    else:
        data = {"up_to": up_to, "seen_at": _iso(now)}
    return len(changed), _record(session, recipient_id, data, now)


def read_all(
    *, session: Session, recipient_id: str, category: str | None, now: datetime
) -> tuple[int, dict | None]:
    count = recipient_inbox.mark_all_read(
        session=session, recipient_id=recipient_id, category=category, now=now
    )
    if not count:
        return 0, None
    data = {"all": True, "category": category, "read_at": _iso(now)}
    return count, _record(session, recipient_id, data, now)


def delete(*, session: Session, recipient_id: str, id: uuid.UUID, now: datetime) -> dict | None:
    """Soft-delete; None when there was nothing of this recipient's to delete."""
    if not recipient_inbox.soft_delete(session=session, recipient_id=recipient_id, id=id, now=now):
        return None
    return _record(session, recipient_id, {"ids": [str(id)], "deleted": True}, now)


def delete_read(
    *, session: Session, recipient_id: str, category: str | None, now: datetime
) -> tuple[int, dict | None]:
    """Soft-delete every read notification the inbox shows (of one category, if given)."""
    count = recipient_inbox.delete_read(
        session=session, recipient_id=recipient_id, category=category, now=now
    )
    if not count:
        return 0, None
    data = {"all": True, "category": category, "deleted": True}
    return count, _record(session, recipient_id, data, now)


def unread_event(*, session: Session, recipient_id: str, cursor: int) -> dict[str, Any]:
    counts = recipient_inbox.unread_counts(session=session, recipient_id=recipient_id)
    return unread_count_event(recipient_id, cursor, counts)


def unread_count_event(recipient_id: str, cursor: int, counts: Counts) -> dict[str, Any]:
    """The ``unread_count`` event: the bell's total, per-category and unseen counts at
    ``cursor``."""
    return {
        "type": "unread_count",
        "recipient": recipient_id,
        "cursor": cursor,
        "data": counts_data(counts),
    }


def counts_data(counts: Counts) -> dict[str, Any]:
    """``{total, by_category, unseen}``: the unread-count answer and event data."""
    return {"total": counts.total, "by_category": counts.by_category, "unseen": counts.unseen}
