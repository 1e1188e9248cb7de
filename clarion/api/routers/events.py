"""``POST /v1/events``: producers' domain events, input of the event rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from clarion.api.deps import Producer, RuntimeDep
from clarion.api.problems import BROKER_ERRORS, unavailable
from clarion.core import queues
from clarion.core.schemas import JsonObject, SubscriberId, UTCDateTime
from clarion.core.storable import StorableModel
from clarion.ids import new_id, utcnow

router = APIRouter(prefix="/v1/events", tags=["events"])
EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]


class EventCreate(StorableModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "type": "member.invited",
                    "subject": "workspace-7",
                    "actor": "user-1",
                    "data": {"invitee": "user-9", "workspace_name": "Acme"},
                }
            ]
        },
    )

    id: uuid.UUID | None = Field(
        default=None, description="Your id for the event; a resend with the same id is stored once."
    )
    type: EventType
    subject: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    actor: SubscriberId | None = None
    data: JsonObject = Field(default_factory=dict)
    occurred_at: UTCDateTime | None = None


class EventAccepted(BaseModel):
    id: uuid.UUID
    occurred_at: datetime


@router.post("", status_code=202, response_model=EventAccepted, summary="Send an event")
def post_event(body: EventCreate, runtime: RuntimeDep, producer: Producer) -> EventAccepted:
    event = body.model_copy(
        update={"id": body.id or new_id(), "occurred_at": body.occurred_at or utcnow()}
    )
    try:
        runtime.celery.send_task(
            "clarion.events.ingest", args=[event.model_dump(mode="json")], queue=queues.ENGINE
        )
    except BROKER_ERRORS:
        raise unavailable("broker") from None
    return EventAccepted(id=event.id, occurred_at=event.occurred_at)
