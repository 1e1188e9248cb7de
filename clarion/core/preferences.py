"""Subscribers' preferences and the routing decisions they drive.

Everything here but :func:`load` is pure (no database, no clock): the router calls
:func:`plan` once per recipient and notification with ``now`` passed in, and tests call it
with any instant they like. The clock arithmetic (quiet-hours windows, digest periods
across DST changes) is in :mod:`clarion.core.wallclock`; ``next_digest_at`` is imported
here too, for the digest task.

For one recipient, category and channel, in this order:

1. **Candidate?** The request's own ``channels`` if it named any; otherwise the category's
   defaults (``settings.category_channels``, else ``default_channels``; in-app always) plus
   every channel the subscriber switched *on* for the category. A channel that is not a
   candidate gets no delivery row.
2. **Opted out?** The subscriber switched the channel off globally (category ``*``) or for
   the category: a ``skipped`` delivery, reason ``opted out``.
3. **Digest?** The category's cadence is hourly, daily or weekly: digestible channels
   (email, push) are ``held`` until the end of the digest period (reason
   ``digest: <cadence>``).
4. **Quiet hours?** Inside the subscriber's window: channels that obey quiet hours (email,
   push) are ``deferred`` to its end (reason ``deferred: quiet hours until <UTC>``).

Critical severity and required categories (``settings.required_categories``) skip steps
2–4. Which channel is subscriber-controlled, digestible or obeys quiet hours is its
``ChannelSpec``'s to say (clarion.channels.registry): in-app is never held or deferred,
and webhooks (the producer's endpoints, not the subscriber's) are not subject to
preferences at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clarion.channels import registry
from clarion.core.wallclock import (
    DEFAULT_DIGEST_AT,
    DEFAULT_DIGEST_WEEKDAY,
    iso_utc,
    next_digest_at,
    quiet_until,
)
from clarion.db import preferences as store
from clarion.settings import Settings

INBOX = registry.inbox()
# The channels a subscriber controls; the order is the one the API lists them in.
SUBSCRIBER_CHANNELS: tuple[str, ...] = registry.subscriber_channels()
# The channels quiet hours defer, and those digests hold (clarion.channels.registry).
QUIET_CHANNELS: frozenset[str] = registry.quiet_hours_channels()
DIGEST_CHANNELS: frozenset[str] = frozenset(registry.digest_channels())
ANY_CATEGORY = store.ANY_CATEGORY
CRITICAL = "critical"

INSTANT = "instant"
CADENCES: tuple[str, ...] = ("instant", "hourly", "daily", "weekly")
# A digest notification's type: it is never held for another digest.
DIGEST_TYPE = "digest"
# The settings page's test notification (clarion.core.trial): the user is waiting for it,
# so it is never held for a digest nor deferred by quiet hours (opt-outs still apply).
TEST_TYPE = "clarion.test"

# What a plan does with one candidate channel (DELIVER: the inbox row is "sent", an
# external channel's rows "pending").
DELIVER, SKIPPED, DEFERRED, HELD = "deliver", "skipped", "deferred", "held"
OPTED_OUT = "opted out"


# -- what is stored, and the operator's defaults --------------------------------------


@dataclass(frozen=True)
class Digest:
    """A digest cadence: instant, hourly, daily (at) or weekly (weekday, at)."""

    cadence: str = INSTANT
    at: str | None = None
    weekday: int | None = None


@dataclass(frozen=True)
class Prefs:
    """One subscriber's stored preferences. ``switches``: (category or "*", channel) → on."""

    switches: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    digests: Mapping[str, Digest] = field(default_factory=dict)
    timezone: str | None = None
    quiet_start: str | None = None
    quiet_end: str | None = None

    def is_off(self, category: str, channel: str) -> bool:
        """Switched off globally or for the category (subscriber-controlled channels only)."""
        return channel in SUBSCRIBER_CHANNELS and (
            self.switches.get((ANY_CATEGORY, channel)) is False
            or self.switches.get((category, channel)) is False
        )


EMPTY = Prefs()


@dataclass(frozen=True)
class Policy:
    """The operator's part of every decision, from Settings."""

    category_channels: Mapping[str, Sequence[str]] = field(default_factory=dict)
    default_channels: Sequence[str] = (INBOX,)
    required: frozenset[str] = frozenset()
    category_digest: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            category_channels=dict(settings.category_channels),
            default_channels=tuple(settings.default_channels),
            required=frozenset(settings.required_categories),
            category_digest=dict(settings.category_digest),
        )

    def defaults(self, category: str) -> list[str]:
        """The category's default channels, the inbox first."""
        channels = list(self.category_channels.get(category, self.default_channels))
        return channels if INBOX in channels else [INBOX, *channels]

    def digest(self, prefs: Prefs, category: str) -> Digest:
        """The subscriber's cadence for the category, else the operator's, else instant."""
        return prefs.digests.get(category) or Digest(self.category_digest.get(category, INSTANT))

    def known_categories(self, prefs: Prefs) -> list[str]:
        """Every category the operator configured or the subscriber has a choice for."""
        stored = {c for c, _ in prefs.switches if c != ANY_CATEGORY} | set(prefs.digests)
        return sorted(
            set(self.category_channels) | self.required | set(self.category_digest) | stored
        )


# -- the decision ----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What routing does with one candidate channel, and why."""

    channel: str
    action: str  # DELIVER, SKIPPED, DEFERRED or HELD
    reason: str | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]
    # Shown in the inbox (and announced live): in-app is a candidate and not switched off.
    in_inbox: bool


def candidates(
    policy: Policy, prefs: Prefs, category: str, requested: Sequence[str] | None
) -> list[str]:
    """Step 1: the request's channels, else the defaults plus the subscriber's extra ones."""
    if requested is not None:
        return list(requested)
    chosen = policy.defaults(category)
    extra = [
        c for c in SUBSCRIBER_CHANNELS if prefs.switches.get((category, c)) and c not in chosen
    ]
    return chosen + extra


def bypasses(policy: Policy, category: str, severity: str) -> bool:
    """Critical severity and required categories ignore opt-outs, digests and quiet hours."""
    return severity == CRITICAL or category in policy.required


def _timed(
    policy: Policy,
    prefs: Prefs,
    category: str,
    type_: str | None,
    now: datetime,
    traits: tuple[bool, bool],
) -> Decision:
    """Steps 3 and 4 for a channel that is (digestible, obeys quiet hours); the channel is
    filled in by the caller."""
    digestible, quiet = traits
    if type_ == TEST_TYPE:
        return Decision("", DELIVER)
    digest = policy.digest(prefs, category)
    if digestible and digest.cadence != INSTANT and type_ != DIGEST_TYPE:
        until = next_digest_at(digest.cadence, digest.at, digest.weekday, prefs.timezone, now)
        return Decision("", HELD, f"digest: {digest.cadence}", until)
    until = quiet_until(prefs.quiet_start, prefs.quiet_end, prefs.timezone, now) if quiet else None
    if until is not None:
        return Decision("", DEFERRED, f"deferred: quiet hours until {iso_utc(until)}", until)
    return Decision("", DELIVER)


def plan(
    policy: Policy,
    prefs: Prefs,
    *,
    category: str,
    severity: str,
    type_: str | None,
    requested: Sequence[str] | None,
    now: datetime,
) -> Plan:
    """The decision for every candidate channel of one notification to one subscriber."""
    exempt = bypasses(policy, category, severity)
    timed: dict[tuple[bool, bool], Decision] = {}
    decisions = []
    for channel in candidates(policy, prefs, category, requested):
        traits = (channel in DIGEST_CHANNELS, channel in QUIET_CHANNELS)
        if not exempt and prefs.is_off(category, channel):
            decisions.append(Decision(channel, SKIPPED, OPTED_OUT))
        elif not exempt and any(traits):
            if traits not in timed:
                timed[traits] = _timed(policy, prefs, category, type_, now, traits)
            made = timed[traits]
            decisions.append(Decision(channel, made.action, made.reason, made.until))
        else:
            decisions.append(Decision(channel, DELIVER))
    in_inbox = any(d.channel == INBOX and d.action == DELIVER for d in decisions)
    return Plan(tuple(decisions), in_inbox)


# -- what the API shows and refuses ----------------------------------------------------


def category_switch(policy: Policy, prefs: Prefs, category: str, channel: str) -> bool:
    """Whether the channel is on for the category when a request names no channels
    (the global switch aside). A required category's defaults cannot be switched off."""
    default = channel in policy.defaults(category)
    stored = prefs.switches.get((category, channel))
    if category in policy.required:
        return default or bool(stored)
    return default if stored is None else stored


def _digest_view(policy: Policy, prefs: Prefs, category: str) -> dict[str, Any]:
    digest = Digest() if category in policy.required else policy.digest(prefs, category)
    timed = digest.cadence in ("daily", "weekly")
    weekday = digest.weekday if digest.weekday is not None else DEFAULT_DIGEST_WEEKDAY
    return {
        "cadence": digest.cadence,
        "at": (digest.at or DEFAULT_DIGEST_AT) if timed else None,
        "weekday": weekday if digest.cadence == "weekly" else None,
    }


def view(policy: Policy, prefs: Prefs) -> dict[str, Any]:
    """The full preferences as ``GET /v1/me/preferences`` shows them."""
    quiet = prefs.quiet_start and prefs.quiet_end
    categories = {}
    for category in policy.known_categories(prefs):
        required = category in policy.required
        defaults = policy.defaults(category)
        channels = {
            c: {
                "enabled": category_switch(policy, prefs, category, c),
                "locked": required,
                "default": c in defaults,
            }
            for c in SUBSCRIBER_CHANNELS
        }
        categories[category] = {
            "required": required,
            "channels": channels,
            "digest": _digest_view(policy, prefs, category),
        }
    return {
        "timezone": prefs.timezone,
        "quiet_hours": {"start": prefs.quiet_start, "end": prefs.quiet_end} if quiet else None,
        "critical_bypasses": True,
        "channels": {
            c: {"enabled": prefs.switches.get((ANY_CATEGORY, c), True), "locked": False}
            for c in SUBSCRIBER_CHANNELS
        },
        "categories": categories,
    }


def locked_changes(
    policy: Policy,
    prefs: Prefs,
    switches: Mapping[str, Mapping[str, bool]],
    digests: Mapping[str, Digest],
) -> list[str]:
    """The fields of an update that would change a required category's locked choice."""
    locked = [
        f"categories.{category}.channels.{channel}"
        for category, chosen in switches.items()
        if category in policy.required
        for channel, enabled in chosen.items()
        if enabled != category_switch(policy, prefs, category, channel)
    ]
    locked += [
        f"categories.{category}.digest"
        for category, digest in digests.items()
        if category in policy.required and digest.cadence != INSTANT
    ]
    return locked


# -- loading ---------------------------------------------------------------------------


def assemble(
    switches: Iterable[tuple[str, str, str, bool]],
    digests: Iterable[tuple[str, str, str, str | None, int | None]],
    profiles: Iterable[tuple[str, str | None, str | None, str | None]],
) -> dict[str, Prefs]:
    """Prefs per subscriber from stored rows: (subscriber, category, channel, enabled),
    (subscriber, category, cadence, at, weekday), (subscriber, timezone, quiet start, end).
    Subscribers with no row anywhere are absent (they get :data:`EMPTY`)."""
    parts: dict[str, dict[str, Any]] = {}

    def of(subscriber: str) -> dict[str, Any]:
        return parts.setdefault(subscriber, {"switches": {}, "digests": {}})

    for subscriber, category, channel, enabled in switches:
        of(subscriber)["switches"][(category, channel)] = enabled
    for subscriber, category, cadence, at, weekday in digests:
        of(subscriber)["digests"][category] = Digest(cadence, at, weekday)
    for subscriber, tz, start, end in profiles:
        of(subscriber).update(timezone=tz, quiet_start=start, quiet_end=end)
    return {subscriber: Prefs(**values) for subscriber, values in parts.items()}


def load(*, session: Session, recipients: Collection[str]) -> dict[str, Prefs]:
    """The stored preferences of these subscribers, in three queries whatever their number."""
    if not recipients:
        return {}
    return assemble(
        store.switches(session=session, recipients=recipients),
        store.digests(session=session, recipients=recipients),
        store.profiles(session=session, recipients=recipients),
    )
