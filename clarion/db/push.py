"""Push subscriptions: each browser or device a subscriber registered for web push."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from clarion.db.dialect import dml, insert_for
from clarion.db.models import PushSubscription, Subscriber
from clarion.ids import new_id


def active_by_subscriber(
    *, session: Session, subscriber_ids: Iterable[str]
) -> dict[str, list[uuid.UUID]]:
    """Ids of the active subscriptions of each subscriber (one query), oldest first."""
    ids = list(subscriber_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(PushSubscription.subscriber_id, PushSubscription.id)
        .where(PushSubscription.subscriber_id.in_(ids), PushSubscription.deactivated_at.is_(None))
        .order_by(PushSubscription.created_at, PushSubscription.id)
    )
    found: dict[str, list[uuid.UUID]] = defaultdict(list)
    for subscriber_id, sub_id in rows:
        found[subscriber_id].append(sub_id)
    return dict(found)


def list_active(*, session: Session, subscriber_id: str) -> list[PushSubscription]:
    return list(
        session.scalars(
            select(PushSubscription)
            .where(
                PushSubscription.subscriber_id == subscriber_id,
                PushSubscription.deactivated_at.is_(None),
            )
            .order_by(PushSubscription.created_at, PushSubscription.id)
        )
    )


class EndpointTaken(Exception):
    """The push endpoint is registered by another subscriber. An endpoint is one browser's
    capability URL: registering it again under another user must not silently take it
    over (the owner would stop getting pushes), so the caller is refused instead."""


def register(
    *,
    session: Session,
    subscriber_id: str,
    endpoint: str,
    p256dh: str,
    auth: str,
    user_agent: str | None,
    now: datetime,
) -> tuple[PushSubscription, bool]:
    """Store a browser's subscription; returns it and whether it is new.

    The endpoint is unique and belongs to the subscriber who registered it first. Posted
    again by that subscriber, it is updated and made active again; posted by another one,
    nothing changes and EndpointTaken is raised (in the same statement, so two users
    racing for a new endpoint cannot both have it).
    """
    fresh = new_id()
    table = PushSubscription.__table__
    stmt = insert_for(session, PushSubscription).values(
        id=fresh,
        subscriber_id=subscriber_id,
        endpoint=endpoint,
        p256dh=p256dh,
        auth=auth,
        user_agent=user_agent,
        created_at=now,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["endpoint"],
        set_={
            "p256dh": stmt.excluded.p256dh,
            "auth": stmt.excluded.auth,
            "user_agent": stmt.excluded.user_agent,
            "updated_at": now,
            "deactivated_at": None,
            "last_error": None,
        },
        where=table.c.subscriber_id == stmt.excluded.subscriber_id,
    ).returning(table.c.id)
    row_id = session.execute(stmt).scalar_one_or_none()
    if row_id is None:
        raise EndpointTaken("the push endpoint is registered by another subscriber")
    row = session.get(PushSubscription, row_id, populate_existing=True)
    return row, row_id == fresh


def remove(*, session: Session, subscriber_id: str, endpoint: str) -> bool:
    """Delete one of the subscriber's subscriptions (the browser unsubscribed)."""
    result = session.execute(
        delete(PushSubscription).where(
            PushSubscription.subscriber_id == subscriber_id,
            PushSubscription.endpoint == endpoint,
        )
    )
    return dml(result).rowcount > 0


def cap(*, session: Session, subscriber_id: str, keep: int) -> int:
    """Delete the subscriber's active subscriptions beyond the ``keep`` most recently
    registered (or re-registered); returns how many went. The subscriber's row is locked
    first, so concurrent registrations of one subscriber count one after the other."""
    session.execute(select(Subscriber.id).where(Subscriber.id == subscriber_id).with_for_update())
    active = (
        PushSubscription.subscriber_id == subscriber_id,
        PushSubscription.deactivated_at.is_(None),
    )
    if session.scalar(select(func.count()).where(*active)) <= keep:
        return 0
    newest = (
        select(PushSubscription.id)
        .where(*active)
        .order_by(PushSubscription.updated_at.desc(), PushSubscription.id.desc())
        .limit(keep)
    )
    stale = delete(PushSubscription).where(*active, PushSubscription.id.not_in(newest))
    return dml(session.execute(stale)).rowcount
