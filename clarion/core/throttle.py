"""The per recipient throttle (Novu's "throttle" step), applied by routing.

At most N notifications per recipient per category per window (``CLARION_THROTTLE``, per
category ``CLARION_CATEGORY_THROTTLE``, e.g. ``{"marketing": "3/day"}``). Each new
notification of a throttled category counts one hit of (recipient, category) in the
shared counters (:mod:`clarion.core.ratelimits`, one round trip); one over the limit is,
by ``CLARION_THROTTLE_EXCESS``:

- ``drop``: every subscriber channel (inbox, email, push) is ``skipped`` with the reason
  ``throttled: ...``; the producer's webhooks still get it (preferences do not apply to
  them either);
- ``digest``: email and push are ``held`` for the next ``CLARION_THROTTLE_DIGEST`` digest
  (reason ``throttled; digest: hourly``), which the digest task sends as one; the inbox
  shows it at once, as with any digest.

Critical severity, required categories, digests themselves and test notifications are
never throttled. A create task that runs twice (a crash before its commit) counts its
notifications twice: the throttle errs on the side of sending less.
"""

from __future__ import annotations

import functools

from clarion.core import preferences as prefs
from clarion.core.ratelimits import Limits, LimitsUnavailable
from clarion.core.schemas import NotificationContent
from clarion.core.wallclock import next_digest_at
from clarion.settings import Settings

THROTTLE = "throttle"
SUBSCRIBER_CHANNELS = frozenset(prefs.SUBSCRIBER_CHANNELS)


@functools.cache
def _limits(url: str) -> Limits:
    return Limits(url)


class Throttle:
    """One create batch's view of the throttle settings."""

    def __init__(self, settings: Settings, policy: prefs.Policy) -> None:
        self.settings, self.policy = settings, policy
        self.on = settings.throttle is not None or bool(settings.category_throttle)

    def applies(self, content: NotificationContent) -> str | None:
        """The limit that applies to this notification, or None."""
        if not self.on or content.type in (prefs.DIGEST_TYPE, prefs.TEST_TYPE):
            return None
        if prefs.bypasses(self.policy, content.category, content.severity):
            return None
        return self.settings.throttle_for(content.category)

    def over(self, recipient: str, content: NotificationContent) -> str | None:
        """Count this notification; the reason to record when it is over the throttle.
        Should the store be unreachable, nothing is throttled (the send matters more)."""
        limit = self.applies(content)
        if limit is None:
            return None
        try:
            refusal = _limits(self.settings.redis_url).hit(
                limit, THROTTLE, content.category, recipient
            )
        except LimitsUnavailable:
            return None
        if refusal is None:
            return None
        if self.settings.throttle_excess == "digest":
            return f"throttled; digest: {self.settings.throttle_digest}"
        return (
            f"throttled: over {refusal.amount} per {refusal.window_seconds} s "
            f"in {content.category!r}"
        )

    def apply(self, plan: prefs.Plan, reason: str, stored: prefs.Prefs, now) -> prefs.Plan:
        """The plan of a throttled notification."""
        if self.settings.throttle_excess == "digest":
            until = next_digest_at(self.settings.throttle_digest, None, None, stored.timezone, now)
            decisions = tuple(
                prefs.Decision(d.channel, prefs.HELD, reason, until)
                if d.channel in prefs.DIGEST_CHANNELS
                and d.action in (prefs.DELIVER, prefs.DEFERRED)
                else d
                for d in plan.decisions
            )
            return prefs.Plan(decisions, plan.in_inbox)
        decisions = tuple(
            prefs.Decision(d.channel, prefs.SKIPPED, reason)
            if d.channel in SUBSCRIBER_CHANNELS and d.action != prefs.SKIPPED
            else d
            for d in plan.decisions
        )
        return prefs.Plan(decisions, in_inbox=False)
