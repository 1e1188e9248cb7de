"""Built-in rule pack: activities (see docs/rules.md).

Event rules: each turns one producer event (``POST /v1/events``) into notifications for
the people it concerns. The event's ``data`` is checked against a small model per event
type (documented on each rule); unknown extra fields are allowed and ignored.

Idempotency: the dedupe key comes from the event id (or, for failing integrations, from
the integration and a fixed time window), so a resent event creates nothing twice.

A malformed event (a required field missing or of the wrong type, or nobody to notify) is
recorded as the run's error, naming the event and the field: the rule raises, the runner
records it on the run (``GET /v1/rules/{key}/runs``) and creates nothing, and the other
rules of the same event still run. An operator sees it; a producer bug does not vanish
into a log line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clarion.core.schemas import SubscriberId
from clarion.engine.rules import Candidate, EventIn, Rule, RuleConfig, RunContext
from clarion.ids import as_utc


class MalformedEvent(ValueError):
    """The event's ``data`` cannot make a notification (recorded as the run's error)."""


class ActivitiesConfig(RuleConfig):
    """One config for the whole pack (``CLARION_RULES={"activities": {...}}``), so that
    the two signup rules share their recipients; any key may also go under a rule key."""

    # member_invited: the workspace admins to tell when the event names none.
    admins: list[SubscriberId] = []
    # new_signup: who hears of every signup (e.g. ["operators"]), besides data.owners.
    signup_recipients: list[SubscriberId] = []
    # integration_*: the owners to tell when the event names none.
    owners: list[SubscriberId] = []
    # integration_failing: at most one notification per integration per this window
    # (fixed UTC windows, by the event's occurred_at).
    renotify_seconds: int = Field(default=6 * 3600, ge=60)


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str | None = Field(default=None, max_length=2048)


class InviteData(_Data):
    invitee: SubscriberId
    admins: list[SubscriberId] | None = None
    workspace_name: str | None = None
    role: str | None = None


class SignupData(_Data):
    user: SubscriberId | None = None
    email: str | None = None
    name: str | None = None
    owners: list[SubscriberId] = []


class IntegrationData(_Data):
    integration: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = None
    owners: list[SubscriberId] | None = None
    error: str | None = Field(default=None, max_length=2000)


def _key(*parts: Any) -> str:
    """A dedupe key within the 255 characters the column allows (long parts hashed)."""
    key = ":".join(str(p) for p in parts)
    return key if len(key) <= 255 else key[:180] + ":" + hashlib.sha256(key.encode()).hexdigest()


class _ActivityRule(Rule):
    pack = "activities"
    Config = ActivitiesConfig
    config: ActivitiesConfig
    Data: type[_Data] = _Data

    def data(self, event: EventIn) -> Any:
        try:
            return self.Data.model_validate(event.data)
        except ValidationError as exc:
            fields = ", ".join(
                f"data.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise MalformedEvent(f"event {event.id} ({event.type}): {fields}") from None

    @staticmethod
    def nobody(event: EventIn, where: str) -> MalformedEvent:
        return MalformedEvent(f"event {event.id} ({event.type}) has nobody to notify: {where}")

    def notify(self, event: EventIn, recipients: list[str], **content: Any) -> Candidate:
        """A candidate worded by a built-in template (``template`` + ``data``; see
        clarion/templates/*/activities.toml), in each recipient's locale."""
        content.setdefault("metadata", {})
        content["metadata"] = {
            "event_id": str(event.id),
            "event_type": event.type,
            **content["metadata"],
        }
        return Candidate(
            category="activities",
            recipients=list(dict.fromkeys(recipients)),
            actor_id=event.actor,
            **content,
        )


class MemberInvited(_ActivityRule):
    """``member.invited`` → ``member_invited`` for the invitee and the workspace admins.

    Event: ``subject`` the workspace id, ``actor`` who invited. ``data``: ``invitee``
    (required, the invited person's subscriber id), ``admins`` (list; default: the
    ``admins`` config), ``workspace_name``, ``role``, ``url`` (optional). The invitee gets
    "You're invited to …", the admins (but not the inviter nor the invitee) "… invited …".
    """

    key = "member_invited"
    description = "A member was invited: tell the invitee and the workspace admins."
    event_type = "member.invited"
    Data = InviteData

    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        event = ctx.trigger()
        data: InviteData = self.data(event)
        key = _key("activities", self.key, event.id)
        meta = {"workspace": event.subject, "invitee": data.invitee, "role": data.role}
        common = {"type": self.key, "url": data.url, "dedupe_key": key, "metadata": meta}
        words = {
            "workspace": data.workspace_name or event.subject,
            "actor": event.actor,
            "invitee": data.invitee,
            "role": data.role,
        }
        yield self.notify(
            event, [data.invitee], severity="medium", template=self.key, data=words, **common
        )
        skip = {data.invitee, event.actor}
        admins = [
            a
            for a in (data.admins if data.admins is not None else self.config.admins)
            if a not in skip
        ]
        if admins:
            yield self.notify(
                event, admins, severity="low", template=f"{self.key}.admins", data=words, **common
            )


class NewSignup(_ActivityRule):
    """``user.signed_up`` → ``new_signup`` for ``data.owners`` (e.g. the workspace's owners)
    and the ``signup_recipients`` config (e.g. ``["operators"]``).

    Event: ``subject`` the new user's workspace (optional), ``actor`` the new user.
    ``data``: ``user`` (default: ``actor``), ``email``, ``name``, ``owners`` (list),
    ``url``; all optional. With no owners and no ``signup_recipients``, the run records
    an error: nobody hears of signups until one of them is set.
    """

    key = "new_signup"
    description = "A new user signed up: tell the owners and the configured recipients."
    event_type = "user.signed_up"
    Data = SignupData

    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        event = ctx.trigger()
        data: SignupData = self.data(event)
        recipients = [*data.owners, *self.config.signup_recipients]
        if not recipients:
            raise self.nobody(event, "no data.owners and no signup_recipients configured")
        who = data.name or data.email or data.user or event.actor
        user = data.user or event.actor
        details = ", ".join(x for x in (data.email, user) if x and x != who)
        yield self.notify(
            event,
            recipients,
            type="new_signup",
            severity="low",
            template="new_signup",
            data={"who": who, "details": details, "workspace": event.subject},
            url=data.url,
            dedupe_key=_key("activities", "new_signup", event.id),
            metadata={"user": user, "email": data.email, "workspace": event.subject},
        )


class NewSignupShort(NewSignup):
    """``signup`` → ``new_signup``: the same rule for producers that send ``signup``
    (same ``data``, same config; a separate key because a rule has one event type)."""

    key = "new_signup.signup"
    event_type = "signup"


class _IntegrationRule(_ActivityRule):
    Data = IntegrationData

    def target(self, event: EventIn) -> tuple[IntegrationData, str, list[str]]:
        data: IntegrationData = self.data(event)
        integration = data.integration or event.subject
        if not integration:
            raise MalformedEvent(
                f"event {event.id} ({event.type}): no data.integration nor subject"
            )
        owners = data.owners if data.owners is not None else self.config.owners
        if not owners:
            raise self.nobody(event, "no data.owners and no owners configured")
        return data, integration, owners


class IntegrationConnected(_IntegrationRule):
    """``integration.connected`` → ``integration_connected`` for the owners.

    ``data``: ``integration`` (id; default: the event's ``subject``), ``name``,
    ``owners`` (list; default: the ``owners`` config), ``url``.
    """

    key = "integration_connected"
    description = "An integration was connected: tell its owners."
    event_type = "integration.connected"

    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        event = ctx.trigger()
        data, integration, owners = self.target(event)
        name = data.name or integration
        yield self.notify(
            event,
            owners,
            type=self.key,
            severity="low",
            template=self.key,
            data={"name": name, "actor": event.actor},
            url=data.url,
            dedupe_key=_key("activities", self.key, event.id),
            metadata={"integration": integration},
        )


class IntegrationFailing(_IntegrationRule):
    """``integration.failed`` → ``integration_failing`` (severity high) for the owners, at
    most once per integration per ``renotify_seconds`` window (fixed UTC windows taken
    from the event's ``occurred_at``): a flapping integration does not flood anyone.

    ``data``: ``integration`` (id; default: ``subject``), ``name``, ``error`` (the
    message to show), ``owners`` (list; default: the ``owners`` config), ``url``.
    """

    key = "integration_failing"
    description = "An integration is failing: tell its owners, at most once per window."
    event_type = "integration.failed"

    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        event = ctx.trigger()
        data, integration, owners = self.target(event)
        name = data.name or integration
        window = self.config.renotify_seconds
        ts = as_utc(event.occurred_at).timestamp()
        start = datetime.fromtimestamp(ts - ts % window, UTC)
        yield self.notify(
            event,
            owners,
            type=self.key,
            severity="high",
            template=self.key,
            data={"name": name, "error": data.error},
            url=data.url,
            dedupe_key=_key("activities", self.key, integration, f"{start:%Y%m%dT%H%M%S}Z"),
            # Updates of one integration's state replace each other on devices.
            collapse_key=_key("integration", integration),
            metadata={
                "integration": integration,
                "error": data.error,
                "window_start": start.isoformat(),
            },
        )


RULES = [MemberInvited, NewSignup, NewSignupShort, IntegrationConnected, IntegrationFailing]
