"""Routing at create time: for each new notification, one delivery row per target.

Every decision is stored on the delivery, so ``GET /v1/notifications/{id}`` explains it:
the inbox row is its own delivery (``sent``); a channel that is not configured, a
recipient who switched the channel off, or one with no target on it (no email address, no
push subscription, no webhook endpoint for the category) gets a ``skipped`` delivery with
the reason; every target gets a ``pending`` delivery, sent by the deliver step.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from clarion import channels as ch
from clarion.db import preferences
from clarion.ids import new_id
from clarion.settings import Settings

OPTED_OUT = "opted out"


class Router:
    """Looks up targets and opt-outs once per batch, then routes each notification."""

    def __init__(
        self,
        *,
        session: Session,
        channels: ch.Channels,
        settings: Settings,
        recipients: list[str],
        now: datetime,
    ) -> None:
        self.session, self.channels, self.now = session, channels, now
        self.recheck = now + timedelta(seconds=settings.sweeper_stuck_seconds)
        self.off = preferences.opted_out(session=session, recipients=recipients)
        self.recipients = recipients
        self._targets: dict[tuple[str, str], dict[str, list[str]]] = {}

    def _targets_of(self, channel: ch.Channel, category: str) -> dict[str, list[str]]:
        key = (channel.key, category)
        if key not in self._targets:
            self._targets[key] = channel.targets(
                session=self.session, recipients=self.recipients, category=category
            )
        return self._targets[key]

    def _row(self, nid: uuid.UUID, channel: str, status: str, target: str = "", reason=None):
        return {
            "id": new_id(),
            "notification_id": nid,
            "channel": channel,
            "target": target,
            "status": status,
            # The inbox row is delivered by being committed.
            "attempts": 1 if channel == ch.INBOX else 0,
            "next_attempt_at": self.recheck if status == "pending" else None,
            "last_error": reason,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def _is_off(self, recipient: str, category: str, channel: str) -> bool:
        off = self.off
        return (recipient, category, channel) in off or (
            recipient,
            preferences.ANY_CATEGORY,
            channel,
        ) in off

    def route(
        self, nid: uuid.UUID, recipient: str, channels: list[str], category: str, severity: str
    ) -> list[dict[str, Any]]:
        """The delivery rows of one notification."""
        rows = []
        for key in channels:
            if key == ch.INBOX:
                rows.append(self._row(nid, key, "sent"))
                continue
            channel = self.channels.get(key)
            if isinstance(channel, str):
                rows.append(self._row(nid, key, "skipped", reason=channel))
            elif severity != "critical" and self._is_off(recipient, category, key):
                rows.append(self._row(nid, key, "skipped", reason=OPTED_OUT))
            elif targets := self._targets_of(channel, category).get(recipient):
                rows += [self._row(nid, key, "pending", target=t) for t in targets]
            else:
                rows.append(self._row(nid, key, "skipped", reason=channel.no_target))
        return rows
