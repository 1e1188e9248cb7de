"""Subscriber profiles, managed by producers (and GDPR erasure)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.orm import Session

from clarion.api.deps import Producer, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import InboxPage, RecentQuery, SubscriberPublic, SubscriberUpdate
from clarion.core.schemas import NotificationPublic
from clarion.db import recipient_inbox, subscribers
from clarion.db.recipient_inbox import InboxFilter
from clarion.ids import utcnow

router = APIRouter(prefix="/v1/subscribers", tags=["subscribers"])
SubscriberPath = Annotated[str, Path(min_length=1, max_length=255)]


@router.put(
    "/{subscriber_id}", response_model=SubscriberPublic, summary="Create or replace a profile"
)
def put_subscriber(
    subscriber_id: SubscriberPath, body: SubscriberUpdate, session: SessionDep, producer: Producer
) -> SubscriberPublic:
    with session.begin():
        row = subscribers.upsert(
            session=session, id=subscriber_id, profile=body.model_dump(), now=utcnow()
        )
    return SubscriberPublic.model_validate(row)


@router.get("/{subscriber_id}", response_model=SubscriberPublic, summary="A profile")
def get_subscriber(
    subscriber_id: SubscriberPath, session: SessionDep, producer: Producer
) -> SubscriberPublic:
    row = subscribers.get(session=session, id=subscriber_id)
    if row is None:
        raise Problem(404, "not-found", "No such subscriber.")
    return SubscriberPublic.model_validate(row)


@router.delete(
    "/{subscriber_id}",
    status_code=204,
    summary="Erase a subscriber and all their notifications (GDPR)",
)
def delete_subscriber(
    subscriber_id: SubscriberPath, session: SessionDep, producer: Producer
) -> Response:
    with session.begin():
        found = subscribers.erase(session=session, id=subscriber_id)
    if not found:
        raise Problem(404, "not-found", "No such subscriber.")
    return Response(status_code=204)


@router.get(
    "/{subscriber_id}/notifications",
    response_model=InboxPage,
    summary="A subscriber's recent notifications, as their inbox shows them (read-only)",
    responses={404: {"description": "No such subscriber"}},
)
def list_subscriber_notifications(
    subscriber_id: SubscriberPath,
    query: Annotated[RecentQuery, Query()],
    session: SessionDep,
    producer: Producer,
) -> InboxPage:
    """Newest first; nothing is marked seen or read."""
    return recent_notifications(session, subscriber_id, query)


def recent_notifications(session: Session, subscriber_id: str, query: RecentQuery) -> InboxPage:
    """The subscriber's inbox listing, for producers and agents: read-only."""
    if subscribers.get(session=session, id=subscriber_id) is None:
        raise Problem(404, "not-found", "No such subscriber.")
    rows = recipient_inbox.page(
        session=session,
        recipient_id=subscriber_id,
        limit=query.limit + 1,
        before=query.cursor,
        filters=InboxFilter(category=query.category, status=query.status, archived=False),
    )
    page = rows[: query.limit]
    return InboxPage(
        items=[NotificationPublic.model_validate(r) for r in page],
        next_cursor=str(page[-1].id) if len(rows) > query.limit else None,
    )
