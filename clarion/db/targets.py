"""Delivery targets that live in their own table (push subscriptions, webhook endpoints):
looked up by the delivery's target id, and deactivated when the provider says "gone"."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import dml
from clarion.db.models import PushSubscription, SubscriberAddress, WebhookEndpoint

Target = type[PushSubscription] | type[WebhookEndpoint] | type[SubscriberAddress]
MAX_ERROR = 2000


def _uuids(ids: Iterable[str]) -> list[uuid.UUID]:
    """Delivery targets are strings; one that is not a UUID names no row."""
    out = []
    for i in ids:
        try:
            out.append(uuid.UUID(str(i)))
        except ValueError:
            continue
    return out


def active_by_ids(*, session: Session, model: Target, ids: Iterable[str]) -> list:
    """The still-active rows among these target ids."""
    wanted = _uuids(ids)
    if not wanted:
        return []
    query = select(model).where(model.id.in_(wanted), model.deactivated_at.is_(None))
    return list(session.scalars(query))


def deactivate(*, session: Session, model: Target, id: str, reason: str, now: datetime) -> bool:
    """Stop addressing a target; the first reason stays."""
    ids = _uuids([id])
    if not ids:
        return False
    result = session.execute(
        update(model)
        .where(model.id == ids[0], model.deactivated_at.is_(None))
        .values(deactivated_at=now, last_error=reason[:MAX_ERROR], updated_at=now)
    )
    return dml(result).rowcount > 0
