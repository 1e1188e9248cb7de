"""What a live connection is owed: replay from a cursor, and live events in cursor order.

A recipient's cursor is their per-recipient sequence. Notifications (``seq``) and inbox
changes (``inbox_events.seq``) share it, and each is committed under the subscriber's row
lock, so the rows with seq > N committed by now are exactly what a client at cursor N has
not seen. Publishing happens after commit, so live events can arrive out of order or be
lost; :class:`Sequencer` delivers them in order and fills any gap from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from clarion.core.schemas import NotificationPublic
from clarion.db import notifications, subscribers
from clarion.db.models import Notification

Event = dict[str, Any]


def current_cursor(*, session: Session, recipient_id: str) -> int:
    return subscribers.seq_of(session=session, id=recipient_id)


def created_event_of(row: Notification) -> Event:
    return {
        "type": "notification.created",
        "recipient": row.recipient_id,
        "cursor": row.seq,
        "data": NotificationPublic.model_validate(row).model_dump(mode="json"),
    }


def replay(*, session: Session, recipient_id: str, since: int, limit: int) -> list[Event] | None:
    """Events after ``since`` in cursor order, or None when there are more than ``limit``."""
    created = notifications.created_after(
        session=session, recipient_id=recipient_id, since=since, limit=limit + 1
    )
    changed = notifications.events_after(
        session=session, recipient_id=recipient_id, since=since, limit=limit + 1
    )
    events = [created_event_of(row) for row in created] + [
        {"type": row.type, "recipient": recipient_id, "cursor": row.seq, "data": row.data}
        for row in changed
    ]
    if len(events) > limit:
        return None
    return sorted(events, key=lambda e: e["cursor"])


# accept() found a gap: the caller runs catch_up (a database read) off the event loop.
GAP = object()


class Sequencer:
    """Turns live events (maybe late, maybe missing) into an in-order, duplicate-free stream.

    ``fill(after)`` returns the stored events after a cursor (``replay``); it is needed
    only when a live event reveals a gap, so the database is read on gaps, not per event.
    Events without a place in the sequence (``unread_count``) pass straight through.
    """

    def __init__(
        self, cursor: int, fill: Callable[[int], list[Event] | None], head: Callable[[], int]
    ) -> None:
        self.cursor = cursor
        self._fill = fill
        self._head = head

    def accept(self, event: Event) -> list[Event] | object:
        """What to send for this live event, in order, or :data:`GAP`: call ``catch_up``."""
        if event["type"] == "unread_count":
            return [event]
        seq = event["cursor"]
        if seq <= self.cursor:
            return []  # already sent (replayed, or a duplicate publish)
        if seq == self.cursor + 1:
            self.cursor = seq
            return [event]
        return GAP

    def catch_up(self) -> list[Event] | None:
        """Everything stored after the cursor (on connect, on a gap, after a resubscribe).

        None means too much was missed to replay: the cursor jumps to the head and the
        client is told to refetch.
        """
        events = self._fill(self.cursor)
        if events is None:
            self.cursor = self._head()
            return None
        events = [e for e in events if e["cursor"] > self.cursor]
        if events:
            self.cursor = events[-1]["cursor"]
        return events
