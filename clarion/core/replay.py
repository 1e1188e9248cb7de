"""What a live connection is owed: replay from a cursor, and live events in cursor order.

A recipient's cursor is their per-recipient sequence. Notifications (``seq``) and inbox
changes (``inbox_events.seq``) share it, and each is committed under the subscriber's row
lock, so the rows with seq > N committed by now are exactly what a client at cursor N has
not seen. Publishing happens after commit, so live events can arrive out of order or be
lost; :class:`Sequencer` delivers them in order and fills any gap from the database.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from clarion.core.schemas import NotificationPublic
from clarion.db import recipient_inbox, resume, subscribers
from clarion.db.models import Notification
from clarion.db.recipient_inbox import Counts

Event = dict[str, Any]
# Event types with no place in the sequence: they pass straight through (their cursor is
# where the client stands when they are sent, not a step of its own).
UNSEQUENCED = frozenset({"unread_count"})


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
    created = recipient_inbox.created_after(
        session=session, recipient_id=recipient_id, since=since, limit=limit + 1
    )
    changed = recipient_inbox.events_after(
        session=session, recipient_id=recipient_id, since=since, limit=limit + 1
    )
    return _merged(recipient_id, created, changed, limit)


def _merged(recipient_id: str, created, changed, limit: int) -> list[Event] | None:
    events = [created_event_of(row) for row in created] + [
        {"type": row.type, "recipient": recipient_id, "cursor": row.seq, "data": row.data}
        for row in changed
    ]
    if len(events) > limit:
        return None
    return sorted(events, key=lambda e: e["cursor"])


@dataclass(slots=True)
class Start:
    """What a connection starts with: the recipient's head (current cursor), unread counts,
    and the replay after its cursor (None: more than the limit, or a cursor past the head)."""

    head: int
    counts: Counts
    replay: list[Event] | None


def starts(
    *, session: Session, asks: Collection[tuple[str, int | None]], limit: int
) -> dict[tuple[str, int | None], Start]:
    """:class:`Start` of each (recipient, cursor or None) asked, for a batch of connections
    that start together: one statement per question for the whole batch."""
    ids = sorted({rid for rid, _ in asks})
    heads = resume.seqs_of(session=session, ids=ids)
    counts = recipient_inbox.unread_counts_of(session=session, recipient_ids=ids)
    replays = [(rid, since) for rid, since in asks if since is not None and since <= heads[rid]]
    created = resume.created_after_each(session=session, asks=replays, limit=limit + 1)
    changed = resume.events_after_each(session=session, asks=replays, limit=limit + 1)
    return {
        (rid, since): Start(
            heads[rid],
            counts.get(rid, Counts()),
            _merged(rid, created[rid, since], changed[rid, since], limit)
            if since is not None and (rid, since) in created
            else None,
        )
        for rid, since in asks
    }


# What to do with a live event (Sequencer.step).
SEND, SKIP, GAP = "send", "skip", "gap"


class Sequencer:
    """Turns live events (maybe late, maybe missing) into an in-order, duplicate-free stream.

    A subclass provides ``fill(after)``, the stored events after a cursor (``replay``), and
    ``head()``, the current cursor; they are needed only when a live event reveals a gap,
    so the database is read on gaps, not per event. (The gateway's connections are
    sequencers themselves, with slots, so a held connection costs no extra objects.)
    """

    __slots__ = ("cursor",)

    def __init__(self, cursor: int = 0) -> None:
        self.cursor = cursor

    def fill(self, after: int) -> list[Event] | None:
        raise NotImplementedError

    def head(self) -> int:
        raise NotImplementedError

    def step(self, seq: int | None) -> str:
        """SEND a live event with cursor ``seq`` (None: a type in UNSEQUENCED), SKIP it
        (already sent: replayed, or a duplicate publish), or GAP: call ``catch_up``."""
        if seq is None:
            return SEND
        if seq == self.cursor + 1:
            self.cursor = seq
            return SEND
        return SKIP if seq <= self.cursor else GAP

    def catch_up(self) -> list[Event] | None:
        """Everything stored after the cursor (on connect, on a gap, after a resubscribe).

        None means too much was missed to replay: the cursor jumps to the head and the
        client is told to refetch.
        """
        events = self.fill(self.cursor)
        if events is None:
            self.cursor = self.head()
            return None
        return self.take(events)

    def take(self, events: list[Event]) -> list[Event]:
        """Of stored ``events`` in cursor order, those after the cursor, which moves past them."""
        events = [e for e in events if e["cursor"] > self.cursor]
        if events:
            self.cursor = events[-1]["cursor"]
        return events
