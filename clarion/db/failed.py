"""Failed-request repository: requests the worker could not store, and their ids."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from clarion.db.dialect import insert_for
from clarion.db.models import FailedNotification, FailedRequest


def record(
    *,
    session: Session,
    request_id: uuid.UUID,
    kind: str,
    producer: str | None,
    reason: str,
    request: str,
    notification_ids: Sequence[uuid.UUID],
    now: datetime,
) -> bool:
    """Record the request (once: a rerun of its task, or another batch of the same fan-out,
    adds only the ids not recorded yet). True if the request was not recorded before."""
    stmt = (
        insert_for(session, FailedRequest)
        .values(
            request_id=request_id,
            kind=kind,
            producer=producer,
            reason=reason,
            request=request,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(FailedRequest.id)
    )
    new = session.execute(stmt).first() is not None
    if notification_ids:
        ids = insert_for(session, FailedNotification).on_conflict_do_nothing(index_elements=["id"])
        session.execute(ids, [{"id": i, "request_id": request_id} for i in notification_ids])
    return new


def get(*, session: Session, request_id: uuid.UUID) -> FailedRequest | None:
    return session.scalar(select(FailedRequest).where(FailedRequest.request_id == request_id))


def of_notification(*, session: Session, id: uuid.UUID) -> FailedRequest | None:
    """The failed request that carried this notification id, if any."""
    return session.scalar(
        select(FailedRequest)
        .join(FailedNotification, FailedNotification.request_id == FailedRequest.request_id)
        .where(FailedNotification.id == id)
    )


def page(
    *,
    session: Session,
    limit: int,
    before_id: int | None = None,
    producer: str | None = None,
    kind: str | None = None,
) -> list[FailedRequest]:
    """Newest first; ``before_id`` is the previous page's last id."""
    query = select(FailedRequest).order_by(FailedRequest.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(FailedRequest.id < before_id)
    if producer is not None:
        query = query.where(FailedRequest.producer == producer)
    if kind is not None:
        query = query.where(FailedRequest.kind == kind)
    return list(session.scalars(query))
