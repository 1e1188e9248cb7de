"""API-only schemas (the pipeline's own contract lives in clarion.core.schemas)."""

from __future__ import annotations

import uuid
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from clarion.core.schemas import (
    JsonObject,
    Locale,
    NotificationContent,
    NotificationPublic,
    SubscriberId,
    UTCDateTime,
)
from clarion.core.storable import StorableModel


class AttemptPublic(BaseModel):
    """One try of a delivery."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    started_at: UTCDateTime
    finished_at: UTCDateTime
    outcome: str = Field(description="sent, retry, dead, gone or expired")
    error: str | None
    provider_ref: str | None


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    target: str = Field(description="Push subscription or webhook endpoint id; empty otherwise.")
    status: str = Field(
        description=(
            "pending, sending, sent, failed, dead or skipped; deferred (quiet hours: sent once "
            "next_attempt_at comes), held (for a digest due at next_attempt_at) or digested "
            "(sent in a digest). last_error gives the reason: 'opted out', "
            "'deferred: quiet hours until <UTC>', 'digest: daily'."
        )
    )
    attempts: int
    next_attempt_at: UTCDateTime | None
    last_error: str | None
    provider_ref: str | None
    created_at: UTCDateTime
    updated_at: UTCDateTime
    timeline: list[AttemptPublic] = Field(default_factory=list)


class NotificationStatus(NotificationPublic):
    """A notification with its routing and delivery state, for producers and operators."""

    state: Literal["created"] = Field(
        default="created", description="Stored and routed (see ScheduledStatus for before)."
    )
    request_id: uuid.UUID
    recipient: str = Field(validation_alias="recipient_id")
    dedupe_key: str | None
    send_at: UTCDateTime | None = Field(
        default=None, description="When it was scheduled for, if it was sent by schedule."
    )
    deleted_at: UTCDateTime | None
    replaced_by: uuid.UUID | None = Field(
        default=None, description="The newer notification with its collapse_key that replaced it."
    )
    deliveries: list[DeliveryPublic]


class ScheduledStatus(BaseModel):
    """A notification accepted with a future ``send_at``: not stored as a notification (no
    ``seq``, no deliveries) until the release task sends it, or cancelled before that."""

    state: Literal["scheduled", "cancelled"]
    id: uuid.UUID
    request_id: uuid.UUID
    recipient: str
    send_at: UTCDateTime
    content: NotificationContent = Field(description="What will be sent, as requested.")
    accepted_at: UTCDateTime
    updated_at: UTCDateTime = Field(description="When it was cancelled, for a cancelled one.")


class FailedStatus(BaseModel):
    """A notification whose request could not be stored (``GET /v1/requests/{id}`` says
    the same): it will never be delivered, and ``reason`` says why."""

    state: Literal["failed"] = "failed"
    id: uuid.UUID
    request_id: uuid.UUID
    reason: str
    failed_at: UTCDateTime


class FailedRequestPublic(BaseModel):
    """A request the worker could not store, for operators."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    request_id: uuid.UUID
    kind: str = Field(description="create (a send), fanout (a send to a topic) or event")
    producer: str | None = Field(description='The API key that sent it: "api-key:<name>#<id>".')
    reason: str
    created_at: UTCDateTime


class FailedRequestDetail(FailedRequestPublic):
    request: str = Field(
        description="The request as JSON text, non-ASCII escaped (a NUL stays \\u0000)."
    )


class FailedRequestPage(BaseModel):
    items: list[FailedRequestPublic]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next, older page.")


class InboxPage(BaseModel):
    items: list[NotificationPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next, older page.")


class UnreadCount(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"total": 3, "by_category": {"links": 2, "system": 1}}]}
    )

    total: int
    by_category: dict[str, int]


class NotificationPatch(StorableModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"read": True}]})

    read: bool | None = None
    archived: bool | None = None


class ReadAll(StorableModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = None


class ReadAllResult(BaseModel):
    updated: int


class SubscriberUpdate(StorableModel):
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
    locale: Locale | None = None
    timezone: str | None = None
    name: Annotated[str, StringConstraints(max_length=255)] | None = None
    data: JsonObject = Field(default_factory=dict)

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


MAX_TOPIC_CHANGE = 10_000


class TopicSubscribersUpdate(StorableModel):
    """``PUT /v1/topics/{key}/subscribers``: ids to subscribe and to unsubscribe."""

    model_config = ConfigDict(extra="forbid")

    add: list[SubscriberId] = Field(default_factory=list, max_length=MAX_TOPIC_CHANGE)
    remove: list[SubscriberId] = Field(default_factory=list, max_length=MAX_TOPIC_CHANGE)

    @model_validator(mode="after")
    def _disjoint(self) -> TopicSubscribersUpdate:
        both = sorted(set(self.add) & set(self.remove))
        if both:
            raise ValueError(f"ids both added and removed: {both[:10]}")
        return self


class TopicSubscribersChanged(BaseModel):
    topic: str
    added: int = Field(description="Ids not subscribed before (unknown ids became subscribers).")
    removed: int = Field(description="Ids that were subscribed.")
    total: int = Field(description="Subscribers of the topic now.")


class TopicMember(BaseModel):
    id: str
    subscribed_at: UTCDateTime


class TopicSubscriberPage(BaseModel):
    topic: str
    total: int
    items: list[TopicMember]
    next_cursor: str | None = Field(description="`cursor` of the next page; null at the end.")


class RequestProgress(BaseModel):
    """``GET /v1/requests/{id}``: how far a send has come."""

    request_id: uuid.UUID
    topic: str | None = Field(description="Set for a send to a topic.")
    status: str = Field(
        description="Topic: fanning_out (pages still being enqueued) or enqueued. "
        "Otherwise: created (the request is stored, all at once). failed: it could not be "
        "stored (see reason); nothing more will be."
    )
    total: int | None = Field(
        description="Topic: its subscribers as of the send (exact once enqueued). Else null."
    )
    batches: int | None = Field(description="Topic: create tasks of fanout_batch recipients.")
    created: int = Field(description="Notifications stored under this request id so far.")
    done: bool
    reason: str | None = Field(default=None, description="Why it failed, when it did.")
