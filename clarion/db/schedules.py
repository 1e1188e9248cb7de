"""Recurring schedule repository: the rows, the due ones, and their audience by time zone.

A zone key is a subscriber's ``timezone`` value, or "" for subscribers without one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import dml, one_of
from clarion.db.models import Schedule, Subscriber, TopicSubscriber

ACTIVE, PAUSED, ENDED = "active", "paused", "ended"
UNSET = ""  # the zone key of subscribers without a time zone


def insert(*, session: Session, values: dict[str, Any]) -> Schedule:
    row = Schedule(**values)
    session.add(row)
    session.flush()
    return row


def get(*, session: Session, id: uuid.UUID, lock: bool = False) -> Schedule | None:
    query = select(Schedule).where(Schedule.id == id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def page(
    *,
    session: Session,
    status: str | None,
    topic: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[Schedule]:
    """Schedules in creation order (ids are UUIDv7), keyset after ``after``."""
    query = select(Schedule).order_by(Schedule.id).limit(limit)
    if status is not None:
        query = query.where(Schedule.status == status)
    if topic is not None:
        query = query.where(Schedule.topic == topic)
    if after is not None:
        query = query.where(Schedule.id > after)
    return list(session.scalars(query))


def remove(*, session: Session, id: uuid.UUID) -> bool:
    return dml(session.execute(delete(Schedule).where(Schedule.id == id))).rowcount > 0


def take_due(*, session: Session, now: datetime, limit: int) -> list[Schedule]:
    """Lock up to ``limit`` schedules whose ``next_at`` has come; rows another beat holds
    are skipped, so two beats never handle one schedule at once."""
    return list(
        session.scalars(
            select(Schedule)
            .where(Schedule.next_at.is_not(None), Schedule.next_at <= now)
            .order_by(Schedule.next_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def save_state(*, session: Session, row: Schedule, values: dict[str, Any]) -> None:
    stmt = update(Schedule).where(Schedule.id == row.id).values(**values)
    session.execute(stmt, execution_options={"synchronize_session": False})


def save_states(*, session: Session, rows: list[dict[str, Any]]) -> None:
    """Store many schedules' state at once (each dict has the schedule's ``id``): one
    executemany, not one round trip per schedule."""
    if rows:
        session.execute(update(Schedule), rows)


def zones_by_subscriber(*, session: Session, ids: Sequence[str]) -> dict[str, str]:
    """{subscriber id: zone key} of the stored ones among ``ids`` (one query for a batch)."""
    if not ids:
        return {}
    query = select(Subscriber.id, _zone_key(Subscriber.timezone)).where(
        one_of(session, Subscriber.id, sorted(set(ids)))
    )
    return {sid: zone for sid, zone in session.execute(query)}


def _zone_key(column):
    return func.coalesce(column, UNSET)


def zones_of_topic(*, session: Session, topic: str) -> dict[str, int]:
    """{zone key: how many} of a topic's subscribers: one GROUP BY, whatever their number."""
    key = _zone_key(Subscriber.timezone)
    query = (
        select(key, func.count())
        .select_from(TopicSubscriber)
        .join(Subscriber, Subscriber.id == TopicSubscriber.subscriber_id)
        .where(TopicSubscriber.topic_key == topic)
        .group_by(key)
    )
    return {zone: n for zone, n in session.execute(query)}


def in_zone(column, zone: str):
    """The condition "this subscriber's zone key is ``zone``" (index-friendly)."""
    return column.is_(None) if zone == UNSET else column == zone
