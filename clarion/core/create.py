"""The ``create`` step: persist notifications and deliveries in one transaction.

Called by the ``create`` task, and by nothing else: the API and ``clarion.enqueue`` only
enqueue. One task may carry several requests (the API coalesces concurrent small ones);
they share one transaction and one statement of each kind, which is what makes small
requests cheap.

Safe to run twice: ids come from the sender, existing ids and dedupe keys are skipped under
the recipients' row locks, and after commit the still-pending deliveries of every request
are dispatched again (the deliver step ignores what is no longer pending).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from clarion.channels import INBOX, Channels
from clarion.core.route import Router
from clarion.core.schemas import CreateMessage, NotificationPublic
from clarion.db import notifications, subscribers
from clarion.db.session import transaction
from clarion.ids import utcnow
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


def persist(
    *,
    session: Session,
    messages: list[CreateMessage],
    settings: Settings,
    channels: Channels,
) -> Created:
    """Insert the requests' new notifications and their deliveries; the caller commits."""
    now = utcnow()
    recipients = sorted({r for m in messages for _, r in m.items})
    subscribers.ensure(session=session, ids=recipients, now=now)
    # Lock the recipients before looking for duplicates, so a concurrent run of the same
    # message waits here and then sees this run's rows.
    seqs = subscribers.lock_seqs(session=session, ids=recipients)
    all_ids = [nid for m in messages for nid, _ in m.items]
    existing = notifications.existing_ids(session=session, ids=all_ids)
    taken = _dedupe_taken(session, messages)
    result = Created()
    rows, deliveries, touched = [], [], set()
    channels_of = [decide_channels(m, settings) for m in messages]
    router = Router(
        session=session, channels=channels, settings=settings, recipients=recipients, now=now
    )
    for message, channels in zip(messages, channels_of, strict=True):
        for nid, recipient in message.items:
            key = (recipient, message.content.dedupe_key)
            if nid in existing:
                result.skipped_existing += 1
                continue
            if message.content.dedupe_key and key in taken:
                result.skipped_dedupe += 1
                continue
            taken.add(key)
            seqs[recipient] += 1
            touched.add(recipient)
            row = _notification_row(nid, recipient, seqs[recipient], message, channels)
            rows.append(row)
            deliveries += router.route(
                nid, recipient, channels, message.content.category, message.content.severity
            )
            if INBOX in channels:
                result.notifications.append(row)
    subscribers.set_seqs(session=session, seqs={r: seqs[r] for r in touched})
    notifications.insert_many(session=session, rows=rows)
    notifications.insert_deliveries(session=session, rows=deliveries)
    result.to_dispatch = _pending_external(session, messages, channels_of)
    return result


def _dedupe_taken(session: Session, messages: list[CreateMessage]) -> set[tuple[str, str]]:
    keys = {m.content.dedupe_key for m in messages if m.content.dedupe_key}
    if not keys:
        return set()
    recipients = {r for m in messages if m.content.dedupe_key for _, r in m.items}
    return notifications.dedupe_pairs(session=session, keys=keys, recipients=recipients)


def _pending_external(
    session: Session, messages: list[CreateMessage], channels_of: list[list[str]]
) -> dict[str, list[uuid.UUID]]:
    """Pending external deliveries of every request, this run's and earlier runs'."""
    external = {c for channels in channels_of for c in channels} - {INBOX}
    ids = [
        nid
        for m, channels in zip(messages, channels_of, strict=True)
        if set(channels) & external
        for nid, _ in m.items
    ]
    if not ids:
        return {}
    grouped: dict[str, list[uuid.UUID]] = defaultdict(list)
    for delivery_id, channel in notifications.pending_deliveries(
        session=session, notification_ids=ids, channels=external
    ):
        grouped[channel].append(delivery_id)
    return dict(grouped)


def _notification_row(
    nid: uuid.UUID, recipient: str, seq: int, message: CreateMessage, channels: list[str]
) -> dict:
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
        "collapse_key": content.collapse_key,
        "expires_at": content.expires_at,
        "template": content.template,
        "template_data": content.data,
        "in_inbox": INBOX in channels,
        # The time the sender accepted it: the id encodes the same instant.
        "created_at": message.accepted_at,
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
    messages: list[CreateMessage],
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: Publisher,
    dispatcher: Dispatcher,
    channels: Channels,
) -> Created:
    """Persist in one transaction, then announce the inbox rows and dispatch the rest."""
    with transaction(sessions) as session:
        result = persist(session=session, messages=messages, settings=settings, channels=channels)
    if result.notifications:
        publisher.publish_many([created_event(row) for row in result.notifications])
    for channel, ids in result.to_dispatch.items():
        dispatcher.deliver(channel, ids)
    return result
