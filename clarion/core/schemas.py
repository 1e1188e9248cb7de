"""The pipeline's public contract: what a producer sends and what a reader gets back.

Defined once here because the API, ``clarion.enqueue`` and the live event stream all speak it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from clarion.ids import as_utc
from clarion.settings import ChannelKey

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
MAX_RECIPIENTS = 1000
MAX_METADATA_BYTES = 16 * 1024

# Every timestamp leaves Clarion in UTC with its offset (SQLite hands back naive values).
UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]
SubscriberId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# Free text, but a slug: categories and types appear in URLs, filters and template keys.
Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]


class NotificationContent(BaseModel):
    """What a notification says and how it is classified; shared by every recipient."""

    model_config = ConfigDict(extra="forbid")

    category: Slug = Field(examples=["links"])
    type: Slug | None = Field(default=None, examples=["link_expiring_soon"])
    severity: Severity = "medium"
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    body: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    actor_id: SubscriberId | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    channels: list[ChannelKey] | None = Field(
        default=None, description="Channels to use; default: the category's configured channels."
    )
    dedupe_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="At most one notification per recipient with this key, ever.",
    )
    collapse_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="Updates sharing this key replace each other on devices (web push Topic).",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value


class NotificationCreate(NotificationContent):
    """``POST /v1/notifications``: one notification for each recipient."""

    recipients: list[SubscriberId] = Field(min_length=1, max_length=MAX_RECIPIENTS)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "recipients": ["user-42"],
                    "category": "links",
                    "type": "link_expiring_soon",
                    "severity": "high",
                    "title": "Your link expires tomorrow",
                    "body": "go.example/abc stops working on 1 December.",
                    "url": "https://app.example/links/abc",
                    "metadata": {"link_id": "abc"},
                }
            ]
        },
    )

    @field_validator("recipients")
    @classmethod
    def _unique_recipients(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("recipients must not repeat")
        return value


class CreateMessage(BaseModel):
    """What the ``create`` task carries: the request with the ids the sender generated."""

    request_id: uuid.UUID
    accepted_at: datetime
    items: list[tuple[uuid.UUID, str]]
    content: NotificationContent


class AcceptedNotification(BaseModel):
    id: uuid.UUID
    recipient: str


class NotificationAccepted(BaseModel):
    """The 202 answer: ids are final; the worker persists them shortly after."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "01a2015f-510d-7aeb-8186-0e32e7000ff3",
                    "notifications": [
                        {"id": "01a2015f-510e-751e-ac47-e0746fe33b3e", "recipient": "user-42"}
                    ],
                }
            ]
        }
    )

    request_id: uuid.UUID
    notifications: list[AcceptedNotification]


class NotificationPublic(BaseModel):
    """A notification as its recipient sees it (inbox API and live events)."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: uuid.UUID
    seq: int = Field(description="The recipient's own sequence: the cursor for live resume.")
    category: str
    type: str | None
    severity: str
    title: str
    body: str | None
    url: str | None
    actor_id: str | None
    metadata: dict[str, Any] = Field(validation_alias="meta")
    created_at: UTCDateTime
    seen_at: UTCDateTime | None
    read_at: UTCDateTime | None
    archived_at: UTCDateTime | None
