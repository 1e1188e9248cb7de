"""The producer side of the pipeline: turn a validated request into a ``create`` message.

Used by the HTTP API and by ``clarion.enqueue`` (a producer's own Celery app), so both
generate ids and enqueue the same way. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from clarion.core.schemas import (
    AcceptedNotification,
    CreateMessage,
    NotificationAccepted,
    NotificationContent,
    NotificationCreate,
)
from clarion.ids import new_id, utcnow

CREATE_TASK = "clarion.create"
CREATE_QUEUE = "create"


def prepare(request: NotificationCreate) -> CreateMessage:
    """Assign the request id and one time-ordered notification id per recipient."""
    content = NotificationContent.model_validate(request.model_dump(exclude={"recipients", "topic"}))
    return CreateMessage(
        request_id=new_id(),
        accepted_at=utcnow(),
        items=[(new_id(), recipient) for recipient in request.recipients],
        content=content,
    )


def accepted(message: CreateMessage) -> NotificationAccepted:
    return NotificationAccepted(
        request_id=message.request_id,
        notifications=[AcceptedNotification(id=nid, recipient=r) for nid, r in message.items],
    )


def fingerprint(body: dict[str, Any]) -> str:
    """A stable hash of a request body, for ``Idempotency-Key`` comparisons."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def enqueue(celery_app, *messages: CreateMessage, **options: Any) -> None:
    """Publish one ``create`` task carrying these requests, by name.

    Works from any Celery app on the same broker (``clarion.enqueue``).
    """
    celery_app.send_task(
        CREATE_TASK,
        args=[m.model_dump(mode="json") for m in messages],
        queue=CREATE_QUEUE,
        **options,
    )
