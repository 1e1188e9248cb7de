"""The ``create`` step: persist a request's notifications and deliveries in one transaction.

Called by the ``create`` task, and by nothing else: the API and ``clarion.enqueue`` only
enqueue. Safe to run twice: ids come from the sender, existing ids and dedupe keys are
skipped under the recipients' row locks, and after commit the still-pending deliveries of
the whole request are dispatched again (the deliver step ignores what is no longer pending).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from clarion.channels import INBOX
from clarion.core.schemas import CreateMessage, NotificationPublic
from clarion.db import notifications, subscribers
from clarion.db.session import transaction
from clarion.ids import new_id, utcnow
from clarion.settings import Settings


class Dispatcher(Protocol):
    def deliver(self, channel: str, delivery_ids: list[uuid.UUID]) -> None: ...


class Publisher(Protocol):
    def publish_many(self, events: list[dict[str, Any]]) -> None: ...


@dataclass
class Created:
    """What one run inserted, and what must happen after its commit."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    skipped_existing: int = 0
    skipped_dedupe: int = 0
    to_dispatch: dict[str, list[uuid.UUID]] = field(default_factory=dict)


def decide_channels(message: CreateMessage, settings: Settings) -> list[str]:
    """The request's own list if it has one; else the category's defaults plus the inbox."""
    requested = message.content.channels
    if requested is not None:
        return list(requested)
    channels = settings.channels_for(message.content.category)
    return channels if INBOX in channels else [INBOX, *channels]


def persist(*, session: Session, message: CreateMessage, settings: Settings) -> Created:
    """Insert the request's new notifications and their deliveries; the caller commits."""
    now = utcnow()
    content = message.content
    recipients = [recipient for _, recipient in message.items]
    subscribers.ensure(session=session, ids=recipients, now=now)
    # Take the recipients' row locks before looking for duplicates, so a concurrent
    # run of the same message waits here and then sees this run's rows.
    subscribers.lock(session=session, ids=recipients)
    all_ids = [nid for nid, _ in message.items]
    existing = notifications.existing_ids(session=session, ids=all_ids)
    deduped = (
        notifications.recipients_with_dedupe_key(
            session=session, dedupe_key=content.dedupe_key, recipients=recipients
        )
        if content.dedupe_key
        else set()
    )
    fresh = [(nid, r) for nid, r in message.items if nid not in existing and r not in deduped]
    result = Created(
        skipped_existing=sum(1 for nid, _ in message.items if nid in existing),
        skipped_dedupe=sum(1 for nid, r in message.items if nid not in existing and r in deduped),
    )
    seqs = subscribers.next_seqs(session=session, ids=[r for _, r in fresh])
    channels = decide_channels(message, settings)
    rows = [_notification_row(nid, r, seqs[r], message) for nid, r in fresh]
    notifications.insert_many(session=session, rows=rows)
    notifications.insert_deliveries(
        session=session,
        rows=[_delivery_row(row["id"], channel, now) for row in rows for channel in channels],
    )
    if INBOX in channels:
        result.notifications = rows
    external = [c for c in channels if c != INBOX]
    if external:
        pending = notifications.pending_deliveries(
            session=session, notification_ids=all_ids, channels=external
        )
        grouped: dict[str, list[uuid.UUID]] = defaultdict(list)
        for delivery_id, channel in pending:
            grouped[channel].append(delivery_id)
        result.to_dispatch = dict(grouped)
    return result


def _notification_row(nid: uuid.UUID, recipient: str, seq: int, message: CreateMessage) -> dict:
    content = message.content
    return {
        "id": nid,
        "request_id": message.request_id,
        "recipient_id": recipient,
        "seq": seq,
        "actor_id": content.actor_id,
        "category": content.category,
        "type": content.type,
        "severity": content.severity,
        "title": content.title,
        "body": content.body,
        "url": content.url,
        "meta": content.metadata,
        "dedupe_key": content.dedupe_key,
        # The time the sender accepted it: the id encodes the same instant.
        "created_at": message.accepted_at,
    }


def _delivery_row(notification_id: uuid.UUID, channel: str, now) -> dict:
    # The inbox row is its own delivery: committed means delivered.
    status = "sent" if channel == INBOX else "pending"
    return {
        "id": new_id(),
        "notification_id": notification_id,
        "channel": channel,
        "status": status,
        "attempts": 1 if channel == INBOX else 0,
        "created_at": now,
        "updated_at": now,
    }


def created_event(row: dict[str, Any]) -> dict[str, Any]:
    """The ``notification.created`` event for one new inbox row."""
    public = NotificationPublic.model_validate(
        {**row, "seen_at": None, "read_at": None, "archived_at": None}
    )
    return {
        "type": "notification.created",
        "recipient": row["recipient_id"],
        "cursor": row["seq"],
        "data": public.model_dump(mode="json"),
    }


def create_notifications(
    message: CreateMessage,
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: Publisher,
    dispatcher: Dispatcher,
) -> Created:
    """Persist in one transaction, then announce the inbox rows and dispatch the rest."""
    with transaction(sessions) as session:
        result = persist(session=session, message=message, settings=settings)
    if result.notifications:
        publisher.publish_many([created_event(row) for row in result.notifications])
    for channel, ids in result.to_dispatch.items():
        dispatcher.deliver(channel, ids)
    return result
