"""Future-dated items, held back by the ``create`` step: stored as scheduled rows under
the ids the API returned, for the release task (:mod:`clarion.core.schedule`) to persist
through the pipeline when they are due. Kept apart from the release so that ``create``
(which holds) and the release (which feeds ``create``'s pipeline) do not import each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from clarion.core.schemas import CreateMessage
from clarion.db import scheduled

# A send_at this close to now is sent at once: the release would be later, not earlier.
TOLERANCE = timedelta(seconds=1)


@dataclass
class Held:
    """What ``create`` persists now, and how many items it stored for later."""

    due: list[CreateMessage] = field(default_factory=list)
    scheduled: int = 0


def hold(*, session: Session, messages: list[CreateMessage], now: datetime) -> Held:
    """Store the items of future-dated messages as scheduled; return what is due now.

    An item the schedule already knows (stored, released or cancelled) belongs to the
    release task: a rerun of its create task, even after ``send_at``, persists nothing,
    so a cancelled notification is never sent by a late duplicate.
    """
    timed = [nid for m in messages if m.content.send_at is not None for nid, _ in m.items]
    if not timed:
        return Held(due=list(messages))
    known = scheduled.known_ids(session=session, ids=timed)
    held, rows = Held(), []
    for message in messages:
        if message.content.send_at is None:
            held.due.append(message)
            continue
        items = [(nid, r) for nid, r in message.items if nid not in known]
        if message.content.send_at > now + TOLERANCE:
            stored = message.model_dump(mode="json", exclude={"items"})
            rows += [_row(message, nid, r, stored, now) for nid, r in items]
        elif items:
            held.due.append(message.model_copy(update={"items": items}))
    scheduled.insert_many(session=session, rows=rows)
    held.scheduled = len(rows)
    return held


def _row(message: CreateMessage, nid: uuid.UUID, recipient: str, stored: dict, now) -> dict:
    return {
        "id": nid,
        "request_id": message.request_id,
        "recipient_id": recipient,
        "send_at": message.content.send_at,
        "message": stored,
        "status": scheduled.SCHEDULED,
        "created_at": now,
        "updated_at": now,
    }
