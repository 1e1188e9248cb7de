"""Collapse: a new notification replaces the recipient's older ones with the same key.

Run by :func:`~clarion.core.create.persist` right after its insert, under the recipients'
row locks it already holds, so two concurrent creates for one recipient collapse in
commit order. For each (recipient, collapse_key) among the new rows the newest new row
stays; every other visible row with that key (older ones, and the batch's own earlier
ones) is soft-deleted with ``replaced_by``, its open external deliveries are skipped, and
the recipient gets a ``notification.updated`` inbox event (``deleted``) numbered from the
same sequence, published after commit with the created events and a new ``unread_count``,
so live clients drop it and their bell stays right.

The newest stored wins, not the earliest accepted: a scheduled notification released
now replaces an update sent an hour ago with the same key.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clarion.core.inbox import unread_count_event, updated_event
from clarion.db import deliveries, notifications, recipient_inbox, subscribers
from clarion.db.recipient_inbox import Counts


def _newest(rows: list[dict[str, Any]]) -> dict[tuple[str, str], uuid.UUID]:
    winners: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row.get("collapse_key") is None:
            continue
        key = (row["recipient_id"], row["collapse_key"])
        best = winners.get(key)
        if best is None or (row["created_at"], row["id"]) > (best["created_at"], best["id"]):
            winners[key] = row
    return {key: row["id"] for key, row in winners.items()}


def replace_older(
    *, session: Session, rows: list[dict[str, Any]], seqs: dict[str, int], now: datetime
) -> list[dict[str, Any]]:
    """Replace what the new ``rows`` supersede; returns the inbox events to publish.

    ``seqs`` are the recipients' locked sequences as ``persist`` left them; the events
    take the next numbers and the new values are stored."""
    winners = _newest(rows)
    if not winners:
        return []
    replaced: dict[uuid.UUID, uuid.UUID] = {}
    events, touched = [], set()
    for row in notifications.collapsible(session=session, pairs=list(winners)):
        winner = winners[(row.recipient_id, row.collapse_key)]
        if row.id == winner:
            continue
        replaced[row.id] = winner
        if row.in_inbox:
            seqs[row.recipient_id] += 1
            touched.add(row.recipient_id)
            data = {"ids": [str(row.id)], "deleted": True, "replaced_by": str(winner)}
            events.append(updated_event(row.recipient_id, seqs[row.recipient_id], data))
    if not replaced:
        return []
    notifications.mark_replaced(session=session, replaced=replaced, now=now)
    deliveries.skip_open(
        session=session,
        reasons={old: f"replaced by {new}" for old, new in replaced.items()},
        now=now,
    )
    recipient_inbox.record_events(
        session=session,
        rows=[
            {
                "recipient_id": e["recipient"],
                "seq": e["cursor"],
                "type": e["type"],
                "data": e["data"],
                "created_at": now,
            }
            for e in events
        ],
    )
    subscribers.set_seqs(session=session, seqs={r: seqs[r] for r in touched})
    # A replaced notification may have been unread: the bell gets the new count, as after
    # a delete by the user (counted in this transaction, so it includes the new rows).
    counts = recipient_inbox.unread_counts_of(session=session, recipient_ids=sorted(touched))
    return events + [
        unread_count_event(r, seqs[r], counts.get(r, Counts())) for r in sorted(touched)
    ]
