"""A click on one of a notification's actions (``POST …/actions/{action_id}``).

The first click on an action is stored in the notification's ``actions`` (its
``clicked_at``, shown by ``GET /v1/notifications/{id}``) and becomes one webhook delivery
per active endpoint of the notification's category, with the event ``action:<id>``: the
deliver step sends it as ``notification.action`` with the usual retries, signatures and
dead letters. The notification is marked read (if it is in the inbox), as any other
opening of it. Clicking the
same action again changes nothing and sends nothing (a double click, a retried request).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from clarion.channels import Channels, webhook
from clarion.core import inbox
from clarion.core.lanes import NORMAL, lane_for
from clarion.db import deliveries, recipient_inbox
from clarion.db.models import Notification
from clarion.ids import new_id
from clarion.settings import Settings

# The channel that carries a click back to the producer.
WEBHOOK = webhook.CHANNEL.key
EVENT_PREFIX = "action:"


class UnknownAction(LookupError):
    """The notification has no action with this id: a 404, like an unknown notification."""


@dataclass
class Clicked:
    """What a click did: where the client goes, and what follows the commit."""

    url: str | None
    event: dict[str, Any] | None = None  # notification.updated (now read), if it changed
    lane: str = NORMAL
    webhook_deliveries: list[uuid.UUID] = field(default_factory=list)


def _webhook_rows(
    session: Session,
    channels: Channels,
    row: Notification,
    action_id: str,
    now: datetime,
    recheck: datetime,
) -> list[dict[str, Any]]:
    """A pending delivery of the click's event to each active endpoint of the category;
    ``recheck``: when the sweeper re-enqueues one whose task never ran."""
    sender = channels.get(WEBHOOK)
    if isinstance(sender, str):  # not available in this deployment
        return []
    targets = sender.targets(session=session, recipients=[row.recipient_id], category=row.category)
    return [
        {
            "id": new_id(),
            "notification_id": row.id,
            "channel": WEBHOOK,
            "target": target,
            "event": EVENT_PREFIX + action_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": recheck,
            "created_at": now,
            "updated_at": now,
        }
        for target in targets.get(row.recipient_id, [])
    ]


def click(
    *,
    session: Session,
    channels: Channels,
    settings: Settings,
    recipient_id: str,
    id: uuid.UUID,
    action_id: str,
    now: datetime,
) -> Clicked | None:
    """Record a click; None when the recipient has no such notification (deleted ones
    included; one sent only by push counts, its actions are on the device).

    The row is locked first, so of two clicks at once exactly one is the first."""
    row = recipient_inbox.get_of_recipient(
        session=session, recipient_id=recipient_id, id=id, for_update=True
    )
    if row is None:
        return None
    actions = list(row.actions or ())
    found = next((a for a in actions if a["id"] == action_id), None)
    if found is None:
        raise UnknownAction(action_id)
    clicked = Clicked(url=found.get("url"), lane=lane_for(row.severity, row.type))
    if found.get("clicked_at") is None:
        row.actions = [{**a, "clicked_at": now.isoformat()} if a is found else a for a in actions]
        recheck = now + timedelta(seconds=settings.sweeper_stuck_seconds)
        rows = _webhook_rows(session, channels, row, action_id, now, recheck)
        deliveries.insert_many(session=session, rows=rows)
        clicked.webhook_deliveries = [r["id"] for r in rows]
    opened = inbox.set_flags(
        session=session,
        recipient_id=recipient_id,
        id=id,
        change=inbox.Change(read=True),
        now=now,
    )
    if opened is not None:  # in the inbox: read now, and the user's tabs are told
        clicked.event = opened[1]
    return clicked
