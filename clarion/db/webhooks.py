"""Webhook endpoint repository: the admin API's CRUD and the webhook channel's addressing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from clarion.db.dialect import dml
from clarion.db.models import WebhookEndpoint
from clarion.ids import new_id


def create(
    *,
    session: Session,
    url: str,
    secret: str,
    categories: list[str],
    description: str | None,
    now: datetime,
) -> WebhookEndpoint:
    row = WebhookEndpoint(
        id=new_id(),
        url=url,
        secret=secret,
        categories=categories,
        description=description,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def count(*, session: Session) -> int:
    """How many endpoints are registered, active or not."""
    return session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0


def get(*, session: Session, id: uuid.UUID, for_update: bool = False) -> WebhookEndpoint | None:
    return session.get(WebhookEndpoint, id, with_for_update=for_update)


def list_all(*, session: Session) -> list[WebhookEndpoint]:
    """Every endpoint, active or not, oldest first (ids are time-ordered)."""
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def change(
    *, session: Session, row: WebhookEndpoint, changes: dict[str, Any], now: datetime
) -> WebhookEndpoint:
    """Set columns (url, categories, description, secret, deactivated_at, last_error)."""
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = now
    session.flush()
    return row


def remove(*, session: Session, id: uuid.UUID) -> bool:
    """Delete an endpoint; its open deliveries are skipped as "target removed" when due."""
    return (
        dml(session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == id))).rowcount > 0
    )


def active_for_category(*, session: Session, category: str) -> list[uuid.UUID]:
    """Ids of active endpoints subscribed to ``category`` (an empty list means every one).

    The category test runs in Python over the active rows: endpoints number in the tens,
    and it keeps one query that PostgreSQL (JSONB) and SQLite (JSON text) both run.
    """
    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.categories)
        .where(WebhookEndpoint.deactivated_at.is_(None))
        .order_by(WebhookEndpoint.id)
    )
    return [row.id for row in rows if not row.categories or category in row.categories]
