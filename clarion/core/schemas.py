"""The pipeline's public contract: what a producer sends and what a reader gets back.

Defined once here because the API, ``clarion.enqueue`` and the live event stream all speak it.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from clarion.channels import registry
from clarion.core.lanes import Lane
from clarion.core.storable import StorableModel, in_utc_range
from clarion.ids import as_utc, derived_ids

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
MAX_RECIPIENTS = 1000
MAX_METADATA_BYTES = 16 * 1024
# Every channel of this installation (built-in and entry points), for the API and OpenAPI.
if TYPE_CHECKING:  # a Literal of the registry's channels, built at import time
    ChannelKey: TypeAlias = str
else:
    ChannelKey = registry.literal(*registry.names())


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"{size} bytes of JSON; the limit is {MAX_METADATA_BYTES}")
    return value


# A free-form JSON object a producer attaches (metadata, template data, event data),
# bounded so one request cannot bloat every row and message it touches.
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded)]

# Every timestamp leaves Clarion in UTC with its offset (SQLite hands back naive values).
UTCDateTime = Annotated[datetime, AfterValidator(as_utc), AfterValidator(in_utc_range)]
SubscriberId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# Free text, but a slug: categories and types appear in URLs, filters and template keys.
Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
# A BCP 47-ish language tag ("en", "pt-BR", "zh_Hant_TW"), as long as its columns allow.
Locale = Annotated[
    str,
    StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"),
]
# A template or topic key: a slug of up to 128 characters.
Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]

LINK_SCHEMES = ("http", "https")
# Browsers drop these inside a URL (tab, newline) or around it before they read the
# scheme, so "java\tscript:" would be a script link: refused anywhere in a link.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_link(value: str) -> str:
    """A link a notification may carry into a page, an email or a push: an absolute
    http(s) URL or a relative one (``/path``, ``?q``, ``#frag``). Anything else
    (``javascript:``, ``data:``, ``mailto:``) becomes an href somewhere: refused."""
    if _CONTROL.search(value) or value != value.strip():
        raise ValueError("a link must not contain control characters or surrounding spaces")
    parts = urlsplit(value)
    if parts.scheme and parts.scheme.lower() not in LINK_SCHEMES:
        raise ValueError("a link must be an http(s) URL or a relative one")
    if parts.scheme and not parts.netloc:
        raise ValueError("an absolute link needs a host")
    return value


# One definition of what a notification may link to (``url``, each action's ``url``).
Link = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(check_link)]
MAX_ACTIONS = 3


class Action(StorableModel):
    """A button on a notification (inbox, web push): the client shows ``label``; a click is
    ``POST /v1/me/notifications/{id}/actions/{action_id}`` (recorded, sent to the
    producer's webhooks) and then opens ``url``, if any."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")] = Field(
        examples=["approve"], description="A slug, unique among the notification's actions."
    )
    label: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        examples=["Approve"]
    )
    url: Link | None = Field(
        default=None, description="Opened after the click: http(s) or relative."
    )


class ActionPublic(BaseModel):
    """An action as stored (validated when it was sent, not again on every read):
    ``clicked_at`` is the recipient's first click on it, if any."""

    id: str
    label: str
    url: str | None = None
    clicked_at: UTCDateTime | None = None


def _unique_actions(value: list[Action] | None) -> list[Action] | None:
    ids = [a.id for a in value or ()]
    if len(set(ids)) != len(ids):
        raise ValueError("action ids must not repeat")
    return value


class NotificationContent(StorableModel):
    """What a notification says and how it is classified; shared by every recipient.

    Either ``title`` (and optionally ``body``) or ``template`` (+ ``data``), rendered per
    recipient in their locale."""

    model_config = ConfigDict(extra="forbid")

    category: Slug = Field(examples=["links"])
    type: Slug | None = Field(default=None, examples=["link_expiring_soon"])
    severity: Severity = "medium"
    template: Key | None = Field(
        default=None, description="A stored template's key, used instead of title/body."
    )
    # After ``template``: its validator reads the template to report a missing title
    # on the field itself.
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = Field(
        default=None, validate_default=True, description="Required unless `template` is given."
    )
    data: JsonObject | None = Field(
        default=None, description="The template's variables (with `template`)."
    )
    send_at: UTCDateTime | None = Field(
        default=None, description="Hold until then (scheduled; cancellable with DELETE)."
    )
    expires_at: UTCDateTime | None = Field(
        default=None, description="Not delivered after this, and hidden from the inbox."
    )
    body: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    url: Link | None = Field(default=None, description="http(s) URL or relative path.")
    actor_id: SubscriberId | None = None
    metadata: JsonObject = Field(default_factory=dict)
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
    actions: Annotated[list[Action], AfterValidator(_unique_actions)] | None = Field(
        default=None,
        max_length=MAX_ACTIONS,
        description="Up to 3 buttons, shown in the inbox and on web push notifications.",
    )

    @field_validator("title")
    @classmethod
    def _title_or_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        template = info.data.get("template")
        if value is None and template is None:
            raise ValueError("title is required (or send by template)")
        if value is not None and template is not None:
            raise ValueError("give either title or template, not both")
        return value

    @model_validator(mode="after")
    def _template_parts(self) -> NotificationContent:
        if self.template is None and (self.data is not None):
            raise ValueError("data goes with template")
        if self.template is not None and self.body is not None:
            raise ValueError("body comes from the template; leave it out")
        if self.expires_at and self.send_at and self.expires_at <= self.send_at:
            raise ValueError("expires_at must be after send_at")
        return self

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value


class NotificationCreate(NotificationContent):
    """``POST /v1/notifications``: one notification for each recipient, or for every
    subscriber of a topic (fanned out in batches on the bulk lane)."""

    recipients: list[SubscriberId] | None = Field(
        default=None, min_length=1, max_length=MAX_RECIPIENTS
    )
    topic: Key | None = Field(
        default=None, description="Send to every subscriber of this topic instead."
    )

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
    def _unique_recipients(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("recipients must not repeat")
        return value

    @model_validator(mode="after")
    def _recipients_or_topic(self) -> NotificationCreate:
        if (self.recipients is None) == (self.topic is None):
            raise ValueError("give either recipients or topic")
        return self


class CreateMessage(StorableModel):
    """What the ``create`` task carries: the request with the ids the sender generated.

    A topic fan-out's page sends ``recipients`` instead of ``items``: each id is derived
    from (request id, recipient, accepted time) when the message is validated, so the
    message carries ~16 bytes per recipient instead of ~54, and a redelivery derives the
    same ids. Once validated, a message has ``items`` only."""

    request_id: uuid.UUID
    accepted_at: datetime
    items: list[tuple[uuid.UUID, str]] = Field(default_factory=list)
    recipients: list[str] | None = None
    content: NotificationContent
    # Set by a topic fan-out (bulk); None: the lane follows the content (clarion.core.lanes).
    lane: Lane | None = None
    # Who sent it ("api-key:<name>#<id>"), for the record of a request that cannot be stored.
    producer: str | None = None

    @model_validator(mode="after")
    def _derive_ids(self) -> CreateMessage:
        if self.recipients is not None:
            if self.items:
                raise ValueError("give either items or recipients")
            ids = derived_ids(self.request_id, self.recipients, self.accepted_at)
            self.items = list(zip(ids, self.recipients, strict=True))
            self.recipients = None
        return self

    @model_serializer(mode="wrap")
    def _one_form(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The form it was built in: ``recipients`` without ``items`` (a worker of an
        older release then refuses it as incomplete rather than storing nothing), or
        ``items`` alone, byte for byte as before the derived form existed."""
        data = handler(self)
        if data.get("recipients") is None:
            data.pop("recipients", None)
        else:
            data.pop("items", None)
        return data


class FanoutMessage(StorableModel):
    """What the ``fanout`` task carries: a request to every subscriber of a topic."""

    request_id: uuid.UUID
    accepted_at: datetime
    topic: str
    content: NotificationContent
    # A recurring schedule's batch for one time zone: only the topic's subscribers whose
    # ``timezone`` is this ("" for those without one). None: every subscriber.
    zone: str | None = None
    producer: str | None = None


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
                    "topic": None,
                    "progress": "/v1/requests/01a2015f-510d-7aeb-8186-0e32e7000ff3",
                }
            ]
        }
    )

    request_id: uuid.UUID
    notifications: list[AcceptedNotification] = Field(
        description="One final id per recipient; empty for a topic (the worker assigns them)."
    )
    topic: str | None = None
    progress: str = Field(description="Where to follow the request: GET /v1/requests/{id}.")


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
    collapse_key: str | None = None
    expires_at: UTCDateTime | None = None
    created_at: UTCDateTime
    seen_at: UTCDateTime | None
    read_at: UTCDateTime | None
    archived_at: UTCDateTime | None
    snoozed_until: UTCDateTime | None = Field(
        default=None, description="Hidden from the inbox and its counts until then."
    )
    actions: list[ActionPublic] = Field(default_factory=list)

    @field_validator("actions", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value
