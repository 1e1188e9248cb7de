"""Preferences: what a subscriber wants on which channel, when, and how often.

The subscriber reads and changes their own under ``/v1/me/preferences`` (user token);
operators read and change anyone's under ``/v1/subscribers/{id}/preferences`` (admin key).
Both take the same bodies. What the fields mean for routing is in
:mod:`clarion.core.preferences` and docs/routing/preferences.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from fastapi import APIRouter, Path
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy.orm import Session

from clarion.api.deps import Admin, CurrentSubscriber, RuntimeDep, SessionDep
from clarion.api.problems import Problem, Responses
from clarion.channels import registry
from clarion.core import preferences as prefs
from clarion.core import wallclock
from clarion.core.schemas import Slug
from clarion.core.storable import StorableModel
from clarion.db import preferences as store
from clarion.db import subscribers
from clarion.ids import utcnow

router = APIRouter(tags=["preferences"])

# The channels a subscriber controls (webhooks are the producer's endpoints: not a
# preference), from the channel registry.
if TYPE_CHECKING:  # a Literal of the registry's channels, built at import time
    SubscriberChannel: TypeAlias = str
else:
    SubscriberChannel = registry.literal(*prefs.SUBSCRIBER_CHANNELS)
Cadence = Literal["instant", "hourly", "daily", "weekly"]
Hhmm = Annotated[str, StringConstraints(pattern=wallclock.HHMM.pattern)]
SubscriberPath = Annotated[str, Path(min_length=1, max_length=255)]


class QuietHours(StorableModel):
    """A daily window, "HH:MM" on the subscriber's clock; it may cross midnight."""

    model_config = ConfigDict(extra="forbid")

    start: Hhmm = Field(examples=["22:00"])
    end: Hhmm = Field(examples=["07:00"])

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class DigestChoice(StorableModel):
    """instant; hourly; daily at ``at``; weekly on ``weekday`` (0 = Monday) at ``at``."""

    model_config = ConfigDict(extra="forbid")

    cadence: Cadence
    at: Hhmm | None = Field(default=None, description="daily and weekly; default 09:00")
    weekday: int | None = Field(default=None, ge=0, le=6, description="weekly; default 0")

    @model_validator(mode="after")
    def _fits_cadence(self) -> DigestChoice:
        if self.at is not None and self.cadence not in ("daily", "weekly"):
            raise ValueError("at applies to daily and weekly digests only")
        if self.weekday is not None and self.cadence != "weekly":
            raise ValueError("weekday applies to weekly digests only")
        return self


class CategoryUpdate(StorableModel):
    model_config = ConfigDict(extra="forbid")

    channels: dict[SubscriberChannel, bool] = Field(default_factory=dict)
    digest: DigestChoice | None = None


class PreferencesUpdate(StorableModel):
    """A partial update: fields left out are unchanged; ``null`` clears ``timezone`` and
    ``quiet_hours``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "timezone": "Europe/Berlin",
                    "quiet_hours": {"start": "22:00", "end": "07:00"},
                    "channels": {"push": False},
                    "categories": {
                        "campaigns": {
                            "channels": {"email": False},
                            "digest": {"cadence": "weekly", "weekday": 0, "at": "09:00"},
                        },
                        "links": {"channels": {"push": True}},
                    },
                }
            ]
        },
    )

    timezone: str | None = Field(default=None, description="IANA zone; null = UTC")
    quiet_hours: QuietHours | None = None
    channels: dict[SubscriberChannel, bool] = Field(
        default_factory=dict, description="Global switches: off here is off in every category."
    )
    categories: dict[Slug, CategoryUpdate] = Field(default_factory=dict, max_length=200)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return value if value is None else wallclock.check_zone(value)


class Toggle(BaseModel):
    enabled: bool
    locked: bool = Field(description="The UI shows it locked: changing it is refused (409).")


class CategoryToggle(Toggle):
    default: bool = Field(description="On for this category unless the subscriber says no.")


class DigestPublic(BaseModel):
    cadence: Cadence
    at: str | None
    weekday: int | None


class CategoryPreferences(BaseModel):
    required: bool = Field(description="An operator-required category: every toggle locked.")
    channels: dict[str, CategoryToggle]
    digest: DigestPublic


class PreferencesPublic(BaseModel):
    """Every preference with its effective value, for every category known."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "timezone": "Europe/Berlin",
                    "quiet_hours": {"start": "22:00", "end": "07:00"},
                    "critical_bypasses": True,
                    "channels": {
                        "in_app": {"enabled": True, "locked": False},
                        "email": {"enabled": True, "locked": False},
                        "push": {"enabled": False, "locked": False},
                    },
                    "categories": {
                        "security": {
                            "required": True,
                            "channels": {
                                "in_app": {"enabled": True, "locked": True, "default": True},
                                "email": {"enabled": True, "locked": True, "default": True},
                                "push": {"enabled": False, "locked": True, "default": False},
                            },
                            "digest": {"cadence": "instant", "at": None, "weekday": None},
                        }
                    },
                }
            ]
        }
    )

    timezone: str | None
    quiet_hours: QuietHours | None
    critical_bypasses: bool = Field(
        description="Critical notifications ignore opt-outs, digests and quiet hours."
    )
    channels: dict[str, Toggle] = Field(description="Global switches (every category).")
    categories: dict[str, CategoryPreferences]


LOCKED: Responses = {409: {"description": "A locked toggle of a required category (problem+json)"}}


def _read(session: Session, policy: prefs.Policy, subscriber_id: str) -> PreferencesPublic:
    stored = prefs.load(session=session, recipients=[subscriber_id])
    return PreferencesPublic.model_validate(
        prefs.view(policy, stored.get(subscriber_id, prefs.EMPTY))
    )


def _profile(body: PreferencesUpdate) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    if "timezone" in body.model_fields_set:
        values["timezone"] = body.timezone
    if "quiet_hours" in body.model_fields_set:
        quiet = body.quiet_hours
        values["quiet_hours_start"] = quiet.start if quiet else None
        values["quiet_hours_end"] = quiet.end if quiet else None
    return values


def _update(
    session: Session, policy: prefs.Policy, subscriber_id: str, body: PreferencesUpdate
) -> PreferencesPublic:
    """Apply a partial update in one transaction; a locked toggle refuses all of it."""
    now = utcnow()
    by_category = {c: u.channels for c, u in body.categories.items()}
    digests = {c: u.digest for c, u in body.categories.items() if u.digest is not None}
    with session.begin():
        subscribers.ensure(session=session, ids=[subscriber_id], now=now)
        stored = prefs.load(session=session, recipients=[subscriber_id])
        locked = prefs.locked_changes(
            policy,
            stored.get(subscriber_id, prefs.EMPTY),
            by_category,
            {c: prefs.Digest(d.cadence) for c, d in digests.items()},
        )
        if locked:
            raise Problem(
                409,
                "preference-locked",
                "These choices of required categories are locked: " + ", ".join(locked),
                fields=locked,
            )
        store.set_profile(
            session=session, subscriber_id=subscriber_id, values=_profile(body), now=now
        )
        switches = {(prefs.ANY_CATEGORY, c): on for c, on in body.channels.items()}
        switches |= {(c, ch): on for c, chosen in by_category.items() for ch, on in chosen.items()}
        store.set_switches(session=session, subscriber_id=subscriber_id, switches=switches, now=now)
        store.set_digests(
            session=session,
            subscriber_id=subscriber_id,
            digests={c: (d.cadence, d.at, d.weekday) for c, d in digests.items()},
            now=now,
        )
    return _read(session, policy, subscriber_id)


def _policy(runtime) -> prefs.Policy:
    return prefs.Policy.from_settings(runtime.settings)


@router.get("/v1/me/preferences", response_model=PreferencesPublic, summary="My preferences")
def get_my_preferences(
    runtime: RuntimeDep, session: SessionDep, me: CurrentSubscriber
) -> PreferencesPublic:
    """Global and per-category channel switches, digest cadences, quiet hours, time zone.

    Every category the operator configured or the subscriber chose something for is
    listed. Toggles of required categories are ``locked``; critical notifications bypass
    opt-outs, digests and quiet hours (``critical_bypasses``)."""
    return _read(session, _policy(runtime), me)


@router.put(
    "/v1/me/preferences",
    response_model=PreferencesPublic,
    summary="Change my preferences (partial)",
    responses={**LOCKED, 422: {"description": "Unknown channel, bad time zone or time"}},
)
def put_my_preferences(
    body: PreferencesUpdate, runtime: RuntimeDep, session: SessionDep, me: CurrentSubscriber
) -> PreferencesPublic:
    """Change only what the body names; returns the full preferences after the change."""
    return _update(session, _policy(runtime), me, body)


@router.get(
    "/v1/subscribers/{subscriber_id}/preferences",
    response_model=PreferencesPublic,
    summary="A subscriber's preferences",
    responses={404: {"description": "No such subscriber (problem+json)"}},
)
def get_preferences(
    subscriber_id: SubscriberPath, runtime: RuntimeDep, session: SessionDep, admin: Admin
) -> PreferencesPublic:
    if subscribers.get(session=session, id=subscriber_id) is None:
        raise Problem(404, "not-found", "No such subscriber.")
    return _read(session, _policy(runtime), subscriber_id)


@router.put(
    "/v1/subscribers/{subscriber_id}/preferences",
    response_model=PreferencesPublic,
    summary="Change a subscriber's preferences (partial; creates the subscriber)",
    responses={**LOCKED, 422: {"description": "Unknown channel, bad time zone or time"}},
)
def put_preferences(
    subscriber_id: SubscriberPath,
    body: PreferencesUpdate,
    runtime: RuntimeDep,
    session: SessionDep,
    admin: Admin,
) -> PreferencesPublic:
    return _update(session, _policy(runtime), subscriber_id, body)
