"""Scheduled notifications: accepted with a future ``send_at``, waiting for the release task.

A row's status moves by conditional updates only: scheduled → released (by the release
task, in the transaction that persists the notification) or scheduled → cancelled (by
``DELETE /v1/notifications/{id}``). Whichever commits first wins; the other finds nothing
to move.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import dml, insert_for
from clarion.db.models import ScheduledNotification

SCHEDULED, RELEASED, CANCELLED = "scheduled", "released", "cancelled"


def known_ids(*, session: Session, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these notification ids have a scheduled row, whatever its status."""
    if not ids:
        return set()
    rows = session.scalars(
        select(ScheduledNotification.id).where(ScheduledNotification.id.in_(ids))
    )
    return set(rows)


def insert_many(*, session: Session, rows: list[dict[str, Any]]) -> None:
    """Store scheduled rows; ids already stored (a rerun of the same create) are left alone."""
    if rows:
        stmt = insert_for(session, ScheduledNotification).on_conflict_do_nothing(
            index_elements=["id"]
        )
        session.execute(stmt, rows)


def take_due(*, session: Session, now: datetime, limit: int) -> list[ScheduledNotification]:
    """Lock up to ``limit`` due scheduled rows; rows another release holds are skipped."""
    return list(
        session.scalars(
            select(ScheduledNotification)
            .where(ScheduledNotification.status == SCHEDULED, ScheduledNotification.send_at <= now)
            .order_by(ScheduledNotification.send_at, ScheduledNotification.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def mark_released(*, session: Session, ids: Sequence[uuid.UUID], now: datetime) -> int:
    return dml(
        session.execute(
            update(ScheduledNotification)
            .where(ScheduledNotification.id.in_(ids), ScheduledNotification.status == SCHEDULED)
            .values(status=RELEASED, updated_at=now)
        )
    ).rowcount


def cancel(*, session: Session, id: uuid.UUID, now: datetime) -> bool:
    """scheduled → cancelled; False when it is not (or no longer) scheduled."""
    return (
        dml(
            session.execute(
                update(ScheduledNotification)
                .where(ScheduledNotification.id == id, ScheduledNotification.status == SCHEDULED)
                .values(status=CANCELLED, updated_at=now)
            )
        ).rowcount
        > 0
    )


def get(*, session: Session, id: uuid.UUID) -> ScheduledNotification | None:
    return session.get(ScheduledNotification, id)
