"""The producer side of the pipeline: turn a validated request into a ``create`` message.

Used by the HTTP API and by ``clarion.enqueue`` (a producer's own Celery app), so both
generate ids and enqueue the same way. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from clarion.core import ledger, queues
from clarion.core.lanes import BULK, lane_for
from clarion.core.schemas import (
    AcceptedNotification,
    CreateMessage,
    FanoutMessage,
    NotificationAccepted,
    NotificationContent,
    NotificationCreate,
)
from clarion.ids import new_id, utcnow

_CONTENT_FIELDS = frozenset(NotificationContent.model_fields)
CREATE_TASK = "clarion.create"
FANOUT_TASK = "clarion.fanout"
# The task message's own summary of its arguments (logs, events, Flower): without one,
# Celery writes a repr of the requests, their content included, on every publish.
_ARGSREPR = "(<%d requests>)"


def prepare(
    request: NotificationCreate, producer: str | None = None
) -> CreateMessage | FanoutMessage:
    """Assign the request id, and one time-ordered notification id per recipient.

    A request to a topic becomes a fan-out message instead: its recipients are known only
    to the database, so the fan-out task assigns their ids (``clarion.core.fanout``).
    ``producer`` names the sender in the record of a request that cannot be stored.
    """
    # The request is a NotificationContent (a subclass, checked by the same validators):
    # its content fields are taken as they are, not validated a second time.
    content = NotificationContent.model_construct(
        request.model_fields_set & _CONTENT_FIELDS,
        **{name: getattr(request, name) for name in _CONTENT_FIELDS},
    )
    if request.topic is not None:
        return FanoutMessage(
            request_id=new_id(),
            accepted_at=utcnow(),
            topic=request.topic,
            content=content,
            producer=producer,
        )
    return CreateMessage.model_construct(  # generated ids, and values validated above
        request_id=new_id(),
        accepted_at=utcnow(),
        items=[(new_id(), recipient) for recipient in request.recipients or ()],
        content=content,
        producer=producer,
    )


def lane_of(message: CreateMessage) -> str:
    """The message's own lane (a fan-out batch), else the one its content calls for."""
    return message.lane or lane_for(message.content.severity, message.content.type)


def accepted(message: CreateMessage | FanoutMessage) -> NotificationAccepted:
    """The 202 body: the final ids, or (topic) none yet, and the progress link."""
    if isinstance(message, FanoutMessage):
        listed, topic = [], message.topic
    else:
        listed = [AcceptedNotification(id=nid, recipient=r) for nid, r in message.items]
        topic = None
    return NotificationAccepted(
        request_id=message.request_id,
        notifications=listed,
        topic=topic,
        progress=f"/v1/requests/{message.request_id}",
    )


def fingerprint(body: dict[str, Any]) -> str:
    """A stable hash of a request body, for ``Idempotency-Key`` comparisons."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def enqueue(celery_app, *messages: CreateMessage | FanoutMessage, **options: Any) -> None:
    """Publish the requests, by task name: one ``create`` task per lane carrying that
    lane's requests, and one ``fanout`` task (bulk lane) per topic request.

    Each message is recorded in the broker's ledger first (``clarion.core.ledger``), so a
    message the broker loses before the task commits is published again by the sweeper.
    Works from any Celery app on the same broker (``clarion.enqueue``).
    """
    book = ledger.for_app(celery_app)
    by_lane: dict[str, list[dict]] = {}
    for m in messages:
        if isinstance(m, FanoutMessage):
            entry = ledger.Entry(
                str(uuid.uuid4()),
                FANOUT_TASK,
                [m.model_dump(mode="json")],
                queues.create_queue(BULK),
            )
            ledger.publish(celery_app, book, entry, argsrepr=_ARGSREPR % 1, **options)
        else:
            by_lane.setdefault(lane_of(m), []).append(m.model_dump(mode="json"))
    for lane, dumped in by_lane.items():
        entry = ledger.Entry(str(uuid.uuid4()), CREATE_TASK, dumped, queues.create_queue(lane))
        ledger.publish(celery_app, book, entry, argsrepr=_ARGSREPR % len(dumped), **options)
