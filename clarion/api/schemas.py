"""API-only schemas (the pipeline's own contract lives in clarion.core.schemas)."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from clarion.channels import registry
from clarion.core.schemas import (
    JsonObject,
    Locale,
    NotificationContent,
    NotificationPublic,
    SubscriberId,
    UTCDateTime,
)
from clarion.core.storable import StorableModel
from clarion.core.trial import CHANNELS as TRIAL_CHANNELS
from clarion.ids import utcnow


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
            "'deferred: quiet hours until <UTC>', 'digest: daily', "
            "'throttled: over <N> per <s> s in <category>', 'throttled; digest: hourly'."
        )
    )
    attempts: int
    next_attempt_at: UTCDateTime | None
    last_error: str | None
    provider_ref: str | None
    created_at: UTCDateTime
    updated_at: UTCDateTime
    event: str | None = Field(
        default=None,
        description="null: the notification itself; 'action:<id>': the webhook event of the "
        "recipient's click on that action.",
    )
    timeline: list[AttemptPublic] = Field(default_factory=list)

    @field_validator("event", mode="before")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


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


class RecentQuery(BaseModel):
    """``GET /v1/subscribers/{id}/notifications`` query (and the
    ``list_recent_notifications`` tool's input): a subscriber's inbox, read-only."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    cursor: uuid.UUID | None = Field(default=None, description="next_cursor of the last page.")
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    status: Literal["unread", "read", "all"] = "all"


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
        json_schema_extra={
            "examples": [{"total": 3, "by_category": {"links": 2, "system": 1}, "unseen": 1}]
        }
    )

    total: int = Field(description="Unread, unarchived, unsnoozed notifications.")
    by_category: dict[str, int]
    unseen: int = Field(description="Of those, the ones never seen (nor read).")


class NotificationPatch(StorableModel):
    """Flags to change; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"read": True}]})

    read: bool | None = Field(default=None, description="false: mark unread. Reading is seeing.")
    archived: bool | None = None
    seen: bool | None = None
    snoozed_until: UTCDateTime | None = Field(
        default=None,
        description="Hide it until then (a future time); null brings a snoozed one back now.",
    )

    @field_validator("snoozed_until")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise ValueError("snoozed_until must be in the future")
        return value


class SeenRequest(BaseModel):
    """``POST /v1/me/notifications/seen``: exactly one of ``ids`` and ``up_to``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"up_to": 42}, {"ids": ["…"]}]}
    )

    ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=100)
    up_to: int | None = Field(
        default=None, ge=0, description="A cursor: every notification up to it is seen."
    )

    @model_validator(mode="after")
    def _one_of(self) -> SeenRequest:
        if (self.ids is None) == (self.up_to is None):
            raise ValueError("give either ids or up_to")
        return self


class ReadAll(StorableModel):
    model_config = ConfigDict(extra="forbid")

    category: str | None = None


class ReadAllResult(BaseModel):
    updated: int


class ActionClicked(BaseModel):
    """Where the client goes next: the action's ``url`` (null: stay)."""

    url: str | None


TrialChannel = registry.literal(*TRIAL_CHANNELS, "all")


class TestRequest(BaseModel):
    """``POST /v1/me/notifications/test``: which of my channels to try."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"channel": "all"}]})

    channel: TrialChannel = "all"  # type: ignore[valid-type]


class TestSent(BaseModel):
    request_id: uuid.UUID
    channels: list[str] = Field(description="The channels it is sent on.")
    skipped: dict[str, str] = Field(
        default_factory=dict,
        description='With "all": the channels left out, and why (no-target, channel-disabled).',
    )


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
