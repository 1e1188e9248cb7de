"""Inbox changes made by the end user, each recorded as a resumable event.

Every change takes the next number of the recipient's sequence in the same transaction
(under the subscriber's row lock, like ``create``), is stored in ``inbox_events`` and,
after commit, is published with the new unread count, so every other tab and device of
the user follows, and one that was offline catches up from its cursor.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clarion.db import notifications, subscribers
from clarion.db.models import Notification


def _record(session: Session, recipient_id: str, data: dict[str, Any], now: datetime) -> dict:
    seq = subscribers.bump_seq(session=session, id=recipient_id)
    notifications.record_event(
        session=session,
        recipient_id=recipient_id,
        seq=seq,
        type="notification.updated",
        data=data,
        now=now,
    )
    return updated_event(recipient_id, seq, data)


def updated_event(recipient_id: str, seq: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "notification.updated", "recipient": recipient_id, "cursor": seq, "data": data}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def set_flags(
    *,
    session: Session,
    recipient_id: str,
    id: uuid.UUID,
    read: bool | None,
    archived: bool | None,
    now: datetime,
) -> tuple[Notification, dict | None] | None:
    """Mark read/unread, archived/unarchived; the event is None when nothing changed."""
    row = notifications.get_for_recipient(session=session, recipient_id=recipient_id, id=id)
    if row is None:
        return None
    before = (row.read_at, row.archived_at)
    if read is not None:
        row.read_at = (row.read_at or now) if read else None
    if archived is not None:
        row.archived_at = (row.archived_at or now) if archived else None
    if (row.read_at, row.archived_at) == before:
        return row, None
    data = {"ids": [str(id)], "read_at": _iso(row.read_at), "archived_at": _iso(row.archived_at)}
    return row, _record(session, recipient_id, data, now)


def read_all(
    *, session: Session, recipient_id: str, category: str | None, now: datetime
) -> tuple[int, dict | None]:
    count = notifications.mark_all_read(
        session=session, recipient_id=recipient_id, category=category, now=now
    )
    if not count:
        return 0, None
    data = {"all": True, "category": category, "read_at": _iso(now)}
    return count, _record(session, recipient_id, data, now)


def delete(*, session: Session, recipient_id: str, id: uuid.UUID, now: datetime) -> dict | None:
    """Soft-delete; None when there was nothing of this recipient's to delete."""
    if not notifications.soft_delete(session=session, recipient_id=recipient_id, id=id, now=now):
        return None
    return _record(session, recipient_id, {"ids": [str(id)], "deleted": True}, now)


def unread_event(*, session: Session, recipient_id: str, cursor: int) -> dict[str, Any]:
    counts = notifications.unread_counts(session=session, recipient_id=recipient_id)
    return unread_count_event(recipient_id, cursor, counts)


def unread_count_event(recipient_id: str, cursor: int, counts: dict[str, int]) -> dict[str, Any]:
    """The ``unread_count`` event: the bell's total and per-category counts at ``cursor``."""
    return {
        "type": "unread_count",
        "recipient": recipient_id,
        "cursor": cursor,
        "data": {"total": sum(counts.values()), "by_category": counts},
    }
