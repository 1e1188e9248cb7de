"""Recurring schedules' bodies: ``ScheduleCreate``, ``ScheduleUpdate``, ``SchedulePublic``.

A schedule is a send body (the same fields and checks as ``POST /v1/notifications``) with
a ``recurrence`` instead of ``send_at``. The MCP tools build their input schemas from these
same models, so the two cannot drift.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from clarion.core.recurrence import Recurrence
from clarion.core.schemas import (
    Key,
    NotificationContent,
    NotificationCreate,
    SubscriberId,
    UTCDateTime,
)

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Status = Literal["active", "paused", "ended"]
# Fields of a send that a recurring schedule decides itself.
_NOT_RECURRING = {
    "send_at": "a recurring schedule has no send_at: its recurrence says when (dtstart)",
    "expires_at": "a recurring schedule has no expires_at",
    "dedupe_key": "a recurring schedule's dedupe key is per occurrence: leave it out",
}


class ScheduleCreate(NotificationCreate):
    """``POST /v1/schedules``: what to send (as a send body), to whom (recipients or a
    topic), and when, again and again (``recurrence``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "standup reminder",
                    "recipients": ["user-42"],
                    "category": "meetings",
                    "title": "Standup in 10 minutes",
                    "recurrence": {"every": "weekdays at 09:50", "timezone": "subscriber"},
                }
            ]
        },
    )

    name: Name | None = Field(default=None, description="A label for people and agents.")
    recurrence: Recurrence
    send_at: SkipJsonSchema[Any] = None
    expires_at: SkipJsonSchema[Any] = None
    dedupe_key: SkipJsonSchema[Any] = None

    @field_validator("send_at", "expires_at", "dedupe_key", mode="before")
    @classmethod
    def _decided_by_schedule(cls, value: Any, info) -> Any:
        if value is not None:
            raise ValueError(_NOT_RECURRING[info.field_name])
        return value


class ScheduleUpdate(BaseModel):
    """``PATCH /v1/schedules/{id}``: the fields given replace the stored ones; the result
    is checked as a whole, like a new schedule. A new ``recurrence``, ``recipients`` or
    ``topic`` starts the schedule over from now (nothing earlier is owed)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"title": "Standup in 5 minutes", "recurrence": {"every": "weekdays at 09:55"}}
            ]
        },
    )

    name: Name | None = None
    recipients: list[SubscriberId] | None = None
    topic: Key | None = None
    recurrence: Recurrence | None = None
    category: str | None = None
    type: str | None = None
    severity: str | None = None
    template: str | None = None
    title: str | None = None
    data: dict[str, Any] | None = None
    body: str | None = None
    url: str | None = None
    actor_id: str | None = None
    metadata: dict[str, Any] | None = None
    channels: list[str] | None = None
    collapse_key: str | None = None


class Occurrence(BaseModel):
    local: datetime = Field(description="The occurrence on the schedule's clock (floating).")
    at: UTCDateTime | None = Field(
        description="The instant (UTC) with a fixed zone; null with timezone 'subscriber' "
        "(each recipient's zone gives its own)."
    )


class SchedulePublic(BaseModel):
    """A schedule, its state and its next occurrences."""

    id: uuid.UUID
    name: str | None
    status: Status = Field(description="active, paused, or ended (no occurrence left).")
    recipients: list[str] | None
    topic: str | None
    content: NotificationContent = Field(description="What each occurrence sends.")
    recurrence: Recurrence
    rrule: str = Field(description="The RRULE in force (a shorthand expanded).")
    next_occurrences: list[Occurrence] = Field(description="Up to five, from now.")
    next_at: UTCDateTime | None = Field(description="When beat looks at this schedule next.")
    last_sent_at: UTCDateTime | None
    created_by: str
    created_at: UTCDateTime
    updated_at: UTCDateTime


class ScheduleFilter(BaseModel):
    """``GET /v1/schedules`` query (and the ``list_schedules`` tool's input)."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = Field(default=None, description="Only schedules in this state.")
    topic: Key | None = Field(default=None, description="Only schedules to this topic.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: uuid.UUID | None = Field(default=None, description="next_cursor of the last page.")


class SchedulePage(BaseModel):
    items: list[SchedulePublic]
    next_cursor: uuid.UUID | None
