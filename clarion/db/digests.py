"""Held deliveries (digest cadence), taken when their period ends and moved on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clarion.db.models import Delivery, Notification
from clarion.ids import as_utc

HELD, DIGESTED, SKIPPED = "held", "digested", "skipped"


@dataclass(frozen=True)
class HeldItem:
    """One held delivery with what the digest lists of its notification."""

    delivery_id: uuid.UUID
    channel: str
    period_end: datetime
    reason: str
    notification_id: uuid.UUID
    recipient_id: str
    category: str
    title: str
    body: str | None
    url: str | None
    created_at: datetime
    expires_at: datetime | None

    @property
    def group(self) -> tuple[str, str, datetime]:
        """One digest per recipient, category and period."""
        return (self.recipient_id, self.category, self.period_end)


def take_due(*, session: Session, now: datetime, limit: int) -> list[HeldItem]:
    """Lock up to ``limit`` held deliveries whose period has ended, grouped in order.

    Rows another run holds are skipped (SKIP LOCKED): two beats never digest one twice."""
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.channel,
            Delivery.next_attempt_at,
            Delivery.last_error,
            Notification.id,
            Notification.recipient_id,
            Notification.category,
            Notification.title,
            Notification.body,
            Notification.url,
            Notification.created_at,
            Notification.expires_at,
        )
        .join(Notification, Notification.id == Delivery.notification_id)
        .where(Delivery.status == HELD, Delivery.next_attempt_at <= now)
        .order_by(
            Delivery.next_attempt_at,
            Notification.recipient_id,
            Notification.category,
            Notification.created_at,
            Delivery.id,
        )
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)
    ).all()
    return [
        HeldItem(
            delivery_id=r[0],
            channel=r[1],
            period_end=as_utc(r[2]),
            reason=r[3] or "",
            notification_id=r[4],
            recipient_id=r[5],
            category=r[6],
            title=r[7],
            body=r[8],
            url=r[9],
            created_at=as_utc(r[10]),
            expires_at=as_utc(r[11]) if r[11] else None,
        )
        for r in rows
    ]


def finish(
    *,
    session: Session,
    ids: Sequence[uuid.UUID],
    status: str,
    reason: str,
    now: datetime,
    ref: str | None = None,
) -> None:
    """held → ``status`` (digested or skipped) with the reason and the digest's id."""
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == HELD)
            .values(
                status=status,
                last_error=reason,
                provider_ref=ref,
                next_attempt_at=None,
                updated_at=now,
            )
        )
