"""Routing at create time: for each new notification, one delivery row per target.

Every decision is stored, so ``GET /v1/notifications/{id}`` explains it. The notification
row is its own in-app delivery (``in_inbox``): no second row is stored for it, which a
broadcast would pay for once per recipient; an inbox that was skipped gets an ``in_app``
row with the reason. A channel that is not configured, a recipient who switched the
channel off (``opted out``), or one with no target on it (no email address, no push
subscription, no webhook endpoint for the category) gets a ``skipped`` delivery with the
reason; a target held for a digest is ``held`` and one inside the recipient's quiet hours
``deferred``, each with the reason and the time it is due in ``next_attempt_at``; one over
the recipient's throttle for its category is ``skipped`` or ``held`` with the reason
``throttled`` (:mod:`clarion.core.throttle`); every other target gets a ``pending``
delivery, sent by the deliver step. Which channels are
candidates and what the recipient chose is decided in :mod:`clarion.core.preferences`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from clarion import channels as ch
from clarion.core import preferences as prefs
from clarion.core.schemas import NotificationContent
from clarion.core.throttle import Throttle
from clarion.db import preferences as store
from clarion.db import subscribers
from clarion.ids import new_id
from clarion.settings import Settings

OPTED_OUT = prefs.OPTED_OUT
# The row status of each action on an external channel.
STATUS = {prefs.DELIVER: "pending", prefs.DEFERRED: "deferred", prefs.HELD: "held"}


@dataclass(frozen=True)
class Routed:
    """One notification's delivery rows, and whether it is shown in the inbox."""

    rows: list[dict[str, Any]]
    in_inbox: bool
    # The channels it has rows on (in_app only when shown in the inbox).
    channels: list[str]


class Router:
    """Loads targets and preferences once per batch, then routes each notification."""

    def __init__(
        self,
        *,
        session: Session,
        channels: ch.Channels,
        settings: Settings,
        recipients: list[str],
        locked: subscribers.Reserved,
        now: datetime,
    ) -> None:
        """``locked``: what the create step read of the recipients with their row locks
        (time zones, quiet hours, and who stored switches or digest choices at all)."""
        self.session, self.channels, self.now = session, channels, now
        self.recheck = now + timedelta(seconds=settings.sweeper_stuck_seconds)
        self.policy = prefs.Policy.from_settings(settings)
        self.throttle = Throttle(settings, self.policy)
        chose = sorted(locked.with_choices)
        self.prefs = prefs.assemble(
            store.switches(session=session, recipients=chose) if chose else (),
            store.digests(session=session, recipients=chose) if chose else (),
            locked.profiles,
        )
        self.recipients = recipients
        self._targets: dict[tuple[str, str], dict[str, list[str]]] = {}
        # Recipients who stored no preference share one plan per kind of notification.
        self._plans: dict[tuple, prefs.Plan] = {}
        # Such a plan's routing when it stores no delivery row (the inbox only): it does
        # not depend on the notification, so it is made once (by the plan's id; the entry
        # holds the plan, so the id is not reused meanwhile).
        self._inbox_only: dict[int, tuple[prefs.Plan, Routed]] = {}
        # The shared plan of each message's content, found without building its key.
        self._plan_of: dict[int, tuple[NotificationContent, prefs.Plan]] = {}

    def _targets_of(self, channel: ch.Channel, category: str) -> dict[str, list[str]]:
        key = (channel.key, category)
        if key not in self._targets:
            self._targets[key] = channel.targets(
                session=self.session, recipients=self.recipients, category=category
            )
        return self._targets[key]

    def _row(self, nid: uuid.UUID, channel: str, status: str, target: str = "", **extra):
        due = extra.get("due")
        return {
            "id": new_id(),
            "notification_id": nid,
            "channel": channel,
            "target": target,
            "status": status,
            "attempts": 0,
            "next_attempt_at": self.recheck if status == "pending" else due,
            "last_error": extra.get("reason"),
            "created_at": self.now,
            "updated_at": self.now,
        }

    def plan(self, recipient: str, content: NotificationContent) -> prefs.Plan:
        """The recipient's decision for each candidate channel of this notification."""
        stored = self.prefs.get(recipient)
        if stored is None:
            known = self._plan_of.get(id(content))
            if known is not None and known[0] is content:
                return known[1]
        requested = tuple(content.channels) if content.channels is not None else None
        key = (content.category, content.severity, content.type, requested)
        if stored is None and key in self._plans:
            self._plan_of[id(content)] = (content, self._plans[key])
            return self._plans[key]
        made = prefs.plan(
            self.policy,
            stored or prefs.EMPTY,
            category=content.category,
            severity=content.severity,
            type_=content.type,
            requested=requested,
            now=self.now,
        )
        if stored is None:
            self._plans[key] = made
        return made

    def route(self, nid: uuid.UUID, recipient: str, content: NotificationContent) -> Routed:
        """The delivery rows of one notification to one recipient."""
        plan = self.plan(recipient, content)
        throttled = self.throttle.over(recipient, content)
        if throttled is not None:
            stored = self.prefs.get(recipient) or prefs.EMPTY
            plan = self.throttle.apply(plan, throttled, stored, self.now)
        else:
            known = self._inbox_only.get(id(plan))
            if known is not None and known[0] is plan:
                return known[1]
        rows: list[dict[str, Any]] = []
        for decision in plan.decisions:
            rows += self._rows(nid, recipient, content.category, decision)
        used = [d.channel for d in plan.decisions if d.channel != ch.INBOX or plan.in_inbox]
        routed = Routed(rows, plan.in_inbox, used)
        if throttled is None and not rows and recipient not in self.prefs:
            # A shared plan with no delivery row: every recipient gets this same answer
            # (an external channel always gets a row, sent or skipped, so none means
            # every decision was the inbox's, which does not depend on the recipient).
            self._inbox_only[id(plan)] = (plan, routed)
        return routed

    def _rows(self, nid, recipient: str, category: str, decision: prefs.Decision) -> list[dict]:
        key = decision.channel
        if key == ch.INBOX:
            if decision.action == prefs.DELIVER:
                return []  # delivered by the notification row's commit
            return [self._row(nid, key, "skipped", reason=decision.reason)]
        channel = self.channels.get(key)
        if isinstance(channel, str):
            return [self._row(nid, key, "skipped", reason=channel)]
        if decision.action == prefs.SKIPPED:
            return [self._row(nid, key, "skipped", reason=decision.reason)]
        targets = self._targets_of(channel, category).get(recipient)
        if not targets:
            return [self._row(nid, key, "skipped", reason=channel.no_target)]
        status = STATUS[decision.action]
        return [
            self._row(nid, key, status, t, reason=decision.reason, due=decision.until)
            for t in targets
        ]
