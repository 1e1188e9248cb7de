"""Topic fan-out: one request to every subscriber of a topic, in batches on the bulk lane.

The API cannot know a topic's subscribers without the database, so it enqueues one
``fanout`` task. That task records the request's ``fanouts`` row, walks the topic's
subscribers in id order (keyset reads of several pages of ``fanout_batch`` at once), and
publishes one ordinary ``create`` message per page on the bulk lane, carrying the page's
recipients without ids. From there it is the one pipeline: create derives the ids, then
persists, routes and dispatches like any other request.

Safe to run twice. The audience is the topic's subscribers as of the moment the API
accepted the request, and each recipient's notification id is derived from
(request id, recipient) with the accepted time as its UUIDv7 time part, so a rerun after
a crash mid-walk, or a redelivered page, gives the same ids again and create skips those
it already stored. A rerun after the walk finished publishes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from clarion.core.lanes import BULK
from clarion.core.schemas import CreateMessage, FanoutMessage
from clarion.db import topics
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings

Publish = Callable[[CreateMessage], None]
# Ids read per query (whole pages, at least one): the walk holds a worker process that the
# pages' creates are waiting for, and each read is a session and a round trip.
READ_IDS = 10_000


@dataclass
class FanoutResult:
    recipients: int = 0
    batches: int = 0
    already_done: bool = False


def batch_message(message: FanoutMessage, recipients: list[str]) -> CreateMessage:
    """The create message of one page of recipients, in the derived form: create derives
    each id from (request id, recipient), so the ids do not travel through the broker,
    the ledger and the worker's pool (docs/benchmarks/fanout.md).

    Built without validation: its parts are valid already (the fan-out message was
    validated, the recipients are stored subscriber ids), and create validates the
    message it receives."""
    return CreateMessage.model_construct(
        request_id=message.request_id,
        accepted_at=message.accepted_at,
        recipients=recipients,
        content=message.content,
        lane=BULK,
        producer=message.producer,
    )


def fan_out(
    message: FanoutMessage,
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publish: Publish,
) -> FanoutResult:
    """Publish one create message per page of the topic's subscribers; record progress."""
    size, as_of = settings.fanout_batch, message.accepted_at
    with transaction(sessions) as session:
        total = topics.count(session=session, key=message.topic, as_of=as_of, zone=message.zone)
        row = topics.start_fanout(
            session=session,
            request_id=message.request_id,
            topic=message.topic,
            total=total,
            batches=math.ceil(total / size),
            message=message.model_dump(mode="json"),
            now=utcnow(),
        )
    if row.status == topics.ENQUEUED:  # every batch was published before this rerun
        return FanoutResult(row.total, row.batches, already_done=True)
    result = _publish_pages(message, sessions=sessions, size=size, publish=publish)
    with transaction(sessions) as session:
        # The count walked, exact even if someone left the topic since the start.
        topics.finish_fanout(
            session=session,
            request_id=message.request_id,
            total=result.recipients,
            batches=result.batches,
            now=utcnow(),
        )
    return result


def _publish_pages(
    message: FanoutMessage, *, sessions: sessionmaker[Session], size: int, publish: Publish
) -> FanoutResult:
    """Walk the audience in id order; one create message per page."""
    result, after, chunk = FanoutResult(), None, size * max(1, READ_IDS // size)
    # One short read per few pages, not one transaction held open while publishing.
    while True:
        with sessions() as session:
            ids = topics.page_ids(
                session=session,
                key=message.topic,
                after=after,
                limit=chunk,
                as_of=message.accepted_at,
                zone=message.zone,
            )
        for start in range(0, len(ids), size):
            page = ids[start : start + size]
            publish(batch_message(message, page))
            result.recipients += len(page)
            result.batches += 1
        if len(ids) < chunk:
            return result
        after = ids[-1]
