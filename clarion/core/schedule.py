"""Scheduled sends: a future ``send_at`` is stored, released by beat, cancellable until then.

The ``create`` step stores the items of a message whose ``send_at`` is still ahead as
``scheduled_notifications`` rows under the ids the API already returned, and does nothing
else for them (:mod:`clarion.core.hold`). The release task (``clarion.schedule.release``,
on beat every ``schedule_interval_seconds``) takes the due rows, runs them through the normal
:func:`~clarion.core.create.persist` under the same ids, so routing, templates and
preferences apply as of the release and the recipient's sequence number is taken then (a
live client's cursor never skips it), and marks them released in the same transaction.

No long Celery countdown: a broker's countdown survives neither a purge nor a visibility
timeout shorter than the wait, while the table does, and a row can be cancelled.
"""

from __future__ import annotations

import uuid
from datetime import datetime

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

# Scheduled rows released per transaction; a run goes on while batches come back full.
RELEASE_BATCH = 1000

CANCELLED, SENT, UNKNOWN = "cancelled", "sent", "unknown"


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
