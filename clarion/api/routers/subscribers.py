"""Subscriber profiles, managed by producers (and GDPR erasure)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from clarion.api.deps import Producer, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import SubscriberPublic, SubscriberUpdate
from clarion.db import subscribers
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
