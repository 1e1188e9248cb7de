"""API-only schemas (the pipeline's own contract lives in clarion.core.schemas)."""

from __future__ import annotations

import json
import uuid
import zoneinfo
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from clarion.core.schemas import MAX_METADATA_BYTES, NotificationPublic, UTCDateTime


class AttemptPublic(BaseModel):
    """One try of a delivery."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    started_at: UTCDateTime
    finished_at: UTCDateTime
    outcome: str = Field(description="sent, retry, dead or gone")
    error: str | None
    provider_ref: str | None


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    target: str = Field(description="Push subscription or webhook endpoint id; empty otherwise.")
    status: str = Field(description="pending, sending, sent, failed, dead or skipped")
    attempts: int
    next_attempt_at: UTCDateTime | None
    last_error: str | None
    provider_ref: str | None
    created_at: UTCDateTime
    updated_at: UTCDateTime
    timeline: list[AttemptPublic] = Field(default_factory=list)


class NotificationStatus(NotificationPublic):
    """A notification with its routing and delivery state, for producers and operators."""

    request_id: uuid.UUID
    recipient: str = Field(validation_alias="recipient_id")
    dedupe_key: str | None
    deleted_at: UTCDateTime | None
    deliveries: list[DeliveryPublic]


class InboxPage(BaseModel):
    items: list[NotificationPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next, older page.")


class UnreadCount(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"total": 3, "by_category": {"links": 2, "system": 1}}]}
    )

    total: int
    by_category: dict[str, int]


class NotificationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"read": True}]})

    read: bool | None = None
    archived: bool | None = None


class ReadAll(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = None


class ReadAllResult(BaseModel):
    updated: int


class SubscriberUpdate(BaseModel):
    """Full profile; fields left out are cleared (PUT semantics)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "locale": "en-GB",
                    "timezone": "Europe/London",
                    "name": "Ada",
                    "data": {"plan": "pro"},
                }
            ]
        },
    )

    email: (
        Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
        | None
    ) = None
    locale: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] | None
    ) = None
    timezone: str | None = None
    name: Annotated[str, StringConstraints(max_length=255)] | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("data")
    @classmethod
    def _data_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"data is larger than {MAX_METADATA_BYTES} bytes")
        return value


class SubscriberPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str | None
    locale: str | None
    timezone: str | None
    name: str | None
    data: dict[str, Any]
    created_at: UTCDateTime
    updated_at: UTCDateTime
