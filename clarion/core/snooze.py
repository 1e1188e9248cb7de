"""Ended snoozes: the notification comes back to the inbox as new, live.

A snoozed notification (``snoozed_until`` set by the user) is hidden from the inbox and
its counts. On beat, :func:`release` takes the ones whose time has passed through one
conditional update (clearing ``snoozed_until``, and making them unread and unseen: a
reminder), takes a cursor for each in its recipient's sequence, stores a
``notification.unsnoozed`` event (the item) and, after commit, publishes it with the
recipient's new unread count. The update only takes rows still snoozed and past, and
skips rows another run holds, so two beats at once or a rerun release each snooze once.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clarion.core.create import Publisher
from clarion.core.inbox import UNSNOOZED, public, unread_count_event
from clarion.db import recipient_inbox, subscribers
from clarion.db.models import Notification
from clarion.db.recipient_inbox import Counts
from clarion.db.session import transaction
from clarion.ids import as_utc, utcnow

BATCH = 1000


def _shown(row: Notification, now: datetime) -> bool:
    """Back in the inbox (a deleted or expired one is released without a word)."""
    unexpired = row.expires_at is None or as_utc(row.expires_at) > now
    return row.in_inbox and row.deleted_at is None and unexpired


def _events(session: Session, rows: list[Notification], now: datetime) -> list[dict[str, Any]]:
    """One stored, sequenced ``notification.unsnoozed`` per row, then each recipient's
    unread count at its last cursor."""
    counts = Counter(row.recipient_id for row in rows)
    if not counts:
        return []
    # Locks the recipients in id order (as create does) and takes their numbers at once.
    seqs = dict(subscribers.reserve_seqs(session=session, counts=counts, now=now).seqs)
    events, stored = [], []
    for row in sorted(rows, key=lambda r: (r.recipient_id, r.seq)):
        recipient, data = row.recipient_id, public(row)
        seqs[recipient] += 1
        events.append({"type": UNSNOOZED, "recipient": recipient, "cursor": seqs[recipient]})
        events[-1]["data"] = data
        stored.append(
            {"recipient_id": recipient, "seq": seqs[recipient], "type": UNSNOOZED, "data": data}
        )
        stored[-1]["created_at"] = now
    recipient_inbox.record_events(session=session, rows=stored)
    unread = recipient_inbox.unread_counts_of(
        session=session, recipient_ids=sorted(counts), now=now
    )
    return events + [
        unread_count_event(r, seqs[r], unread.get(r, Counts())) for r in sorted(counts)
    ]


def release(
    *, sessions: sessionmaker[Session], publisher: Publisher, now: datetime | None = None
) -> int:
    """Release every snooze that has ended (in batches); returns how many came back."""
    released = 0
    while True:
        at = now or utcnow()
        with transaction(sessions) as session:
            rows = recipient_inbox.unsnooze_due(session=session, now=at, limit=BATCH)
            events = _events(session, [r for r in rows if _shown(r, at)], at)
        if events:
            publisher.publish_many(events)
        released += len(rows)
        if len(rows) < BATCH:
            return released
