"""Scheduled sends: a future ``send_at`` is stored, released by beat, cancellable until then.

The ``create`` step stores the items of a message whose ``send_at`` is still ahead as
``scheduled_notifications`` rows under the ids the API already returned, and does nothing
else for them. The release task (``clarion.schedule.release``, on beat every
``schedule_interval_seconds``) takes the due rows, runs them through the normal
:func:`~clarion.core.create.persist` under the same ids, so routing, templates and
preferences apply as of the release and the recipient's sequence number is taken then (a
live client's cursor never skips it), and marks them released in the same transaction.

No long Celery countdown: a broker's countdown survives neither a purge nor a visibility
timeout shorter than the wait, while the table does, and a row can be cancelled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from clarion.channels import Channels
from clarion.core import create as pipeline
from clarion.core import failures
from clarion.core.schemas import CreateMessage
from clarion.db import notifications, scheduled
from clarion.db.models import ScheduledNotification
from clarion.ids import as_utc, utcnow
from clarion.settings import Settings

# A send_at this close to now is sent at once: the release would be later, not earlier.
TOLERANCE = timedelta(seconds=1)
# Scheduled rows released per transaction; a run goes on while batches come back full.
RELEASE_BATCH = 1000

CANCELLED, SENT, UNKNOWN = "cancelled", "sent", "unknown"


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


def _messages(session: Session, rows: list[ScheduledNotification]) -> list[CreateMessage]:
    """The due rows as create messages, one per request, with their original ids. A
    request stored before a stricter rule (a link scheme) is recorded as failed instead
    of stopping every release of the batch."""
    by_request: dict[uuid.UUID, list[ScheduledNotification]] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append(row)
    messages = []
    for group in by_request.values():
        raw = {
            **group[0].message,
            # The inbox shows when it was sent, not when the producer asked.
            "accepted_at": as_utc(group[0].send_at),
            "items": [(row.id, row.recipient_id) for row in group],
        }
        try:
            messages.append(CreateMessage.model_validate(raw))
        except ValidationError as exc:
            failures.record_in(session, "create", raw, failures.reason_of(exc))
    return messages


def release(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: pipeline.Publisher,
    dispatcher: pipeline.Dispatcher,
    channels: Channels,
    now: datetime | None = None,
    limit: int = RELEASE_BATCH,
) -> int:
    """Persist every scheduled notification due by ``now``; returns how many were released.

    Rows are locked with SKIP LOCKED and marked released in the transaction that persists
    them, so two beats, or a rerun, release each row once."""
    now = now or utcnow()

    def take(session: Session) -> tuple[list[CreateMessage], int]:
        rows = scheduled.take_due(session=session, now=now, limit=limit)
        if not rows:
            return [], 0
        scheduled.mark_released(session=session, ids=[r.id for r in rows], now=utcnow())
        return _messages(session, rows), len(rows)

    return pipeline.persist_due(
        take,
        limit=limit,
        sessions=sessions,
        settings=settings,
        publisher=publisher,
        dispatcher=dispatcher,
        channels=channels,
    )


def cancel(*, session: Session, id: uuid.UUID, now: datetime) -> str:
    """Cancel a scheduled notification: ``cancelled`` (now or before), ``sent`` when it
    was released or never scheduled, ``unknown`` when no such id is stored (yet)."""
    if scheduled.cancel(session=session, id=id, now=now):
        return CANCELLED
    row = scheduled.get(session=session, id=id)
    if row is not None:
        return CANCELLED if row.status == scheduled.CANCELLED else SENT
    if notifications.get(session=session, id=id) is not None:
        return SENT
    return UNKNOWN
