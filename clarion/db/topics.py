"""Topic and fan-out repository: topics, their subscribers, and fan-out progress rows.

Every write is one statement for the whole list of ids (up to 10,000 per call), never one
per id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from clarion.db import schedules, subscribers
from clarion.db.dialect import dml, insert_for
from clarion.db.models import Fanout, Notification, Subscriber, Topic, TopicSubscriber

FANNING_OUT, ENQUEUED = "fanning_out", "enqueued"


def ensure(*, session: Session, key: str, now: datetime) -> None:
    """Create the topic if it does not exist yet."""
    stmt = insert_for(session, Topic).on_conflict_do_nothing(index_elements=["key"])
    session.execute(stmt.values(key=key, created_at=now))


def exists(*, session: Session, key: str) -> bool:
    return session.get(Topic, key) is not None


def add(*, session: Session, key: str, ids: Sequence[str], now: datetime) -> int:
    """Subscribe these ids (creating bare subscribers for new ones); returns how many were
    not subscribed before."""
    if not ids:
        return 0
    new = sorted(set(ids))  # one order for everyone: concurrent calls queue, not deadlock
    subscribers.ensure(session=session, ids=new, now=now)
    stmt = (
        insert_for(session, TopicSubscriber)
        .on_conflict_do_nothing(index_elements=["topic_key", "subscriber_id"])
        .returning(TopicSubscriber.subscriber_id)
    )
    rows = [{"topic_key": key, "subscriber_id": i, "created_at": now} for i in new]
    return len(session.execute(stmt, rows).all())


def remove(*, session: Session, key: str, ids: Sequence[str]) -> int:
    """Unsubscribe these ids; returns how many were subscribed."""
    if not ids:
        return 0
    stmt = delete(TopicSubscriber).where(
        TopicSubscriber.topic_key == key, TopicSubscriber.subscriber_id.in_(sorted(set(ids)))
    )
    return dml(session.execute(stmt)).rowcount


def _members(key: str, as_of: datetime | None, zone: str | None = None):
    where = [TopicSubscriber.topic_key == key]
    if as_of is not None:
        where.append(TopicSubscriber.created_at <= as_of)
    if zone is not None:  # one time zone's subscribers (a recurring schedule's batch)
        in_zone = schedules.in_zone(Subscriber.timezone, zone)
        where.append(TopicSubscriber.subscriber_id.in_(select(Subscriber.id).where(in_zone)))
    return where


def count(
    *, session: Session, key: str, as_of: datetime | None = None, zone: str | None = None
) -> int:
    """Subscribers of the topic (those subscribed at or before ``as_of``, when given; in
    the time zone ``zone``, when given)."""
    where = _members(key, as_of, zone)
    query = select(func.count()).select_from(TopicSubscriber).where(*where)
    return session.scalar(query) or 0


def page(
    *,
    session: Session,
    key: str,
    after: str | None,
    limit: int,
    as_of: datetime | None = None,
) -> list[tuple[str, datetime]]:
    """(subscriber id, subscribed at) in id order after ``after``: keyset, no OFFSET."""
    query = _page(TopicSubscriber.created_at, key=key, after=after, limit=limit, as_of=as_of)
    return [(row.subscriber_id, row.created_at) for row in session.execute(query)]


def page_ids(
    *,
    session: Session,
    key: str,
    after: str | None,
    limit: int,
    as_of: datetime | None,
    zone: str | None = None,
) -> list[str]:
    """:func:`page` without the times, for the fan-out walk (reading and converting each
    row's timestamp showed per recipient: docs/benchmarks/code.md); ``zone``: one time
    zone's only."""
    query = _page(key=key, after=after, limit=limit, as_of=as_of, zone=zone)
    return list(session.scalars(query))


def _page(*extra, key: str, after: str | None, limit: int, as_of: datetime | None, zone=None):
    query = select(TopicSubscriber.subscriber_id, *extra).where(*_members(key, as_of, zone))
    if after is not None:
        query = query.where(TopicSubscriber.subscriber_id > after)
    return query.order_by(TopicSubscriber.subscriber_id).limit(limit)


def start_fanout(
    *,
    session: Session,
    request_id: uuid.UUID,
    topic: str,
    total: int,
    batches: int,
    message: dict[str, Any],
    now: datetime,
) -> Fanout:
    """The request's fan-out row: inserted on the first run, returned as is on a rerun."""
    stmt = insert_for(session, Fanout).on_conflict_do_nothing(index_elements=["request_id"])
    session.execute(
        stmt.values(
            request_id=request_id,
            topic=topic,
            status=FANNING_OUT,
            total=total,
            batches=batches,
            message=message,
            created_at=now,
        )
    )
    return session.execute(select(Fanout).where(Fanout.request_id == request_id)).scalar_one()


def finish_fanout(
    *, session: Session, request_id: uuid.UUID, total: int, batches: int, now: datetime
) -> None:
    """Every batch is in the broker: record the exact count walked."""
    session.execute(
        update(Fanout)
        .where(Fanout.request_id == request_id)
        .values(status=ENQUEUED, total=total, batches=batches, finished_at=now)
    )


def get_fanout(*, session: Session, request_id: uuid.UUID) -> Fanout | None:
    return session.get(Fanout, request_id)


def created_count(*, session: Session, request_id: uuid.UUID) -> int:
    """Notifications stored under the request id (served by ``ix_notifications_request``)."""
    query = select(func.count()).select_from(Notification)
    return session.scalar(query.where(Notification.request_id == request_id)) or 0
