"""Subscriber addresses (a chat URL, a phone number): one per subscriber per channel.

The value arrives sealed by its channel (clarion.channels.addresses); this repository
stores and finds rows, it never sees an address in clear.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clarion.db.dialect import dml
from clarion.db.models import SubscriberAddress
from clarion.ids import new_id


def put(
    *, session: Session, subscriber_id: str, channel: str, sealed: str, display: str, now: datetime
) -> SubscriberAddress:
    """Set (or replace, reactivating it) the subscriber's address on the channel."""
    row = get(session=session, subscriber_id=subscriber_id, channel=channel)
    if row is None:
        row = SubscriberAddress(
            id=new_id(), subscriber_id=subscriber_id, channel=channel, created_at=now
        )
        session.add(row)
    row.sealed, row.display, row.updated_at = sealed, display, now
    row.deactivated_at = row.last_error = None
    session.flush()
    return row


def get(*, session: Session, subscriber_id: str, channel: str) -> SubscriberAddress | None:
    return session.scalars(
        select(SubscriberAddress).where(
            SubscriberAddress.subscriber_id == subscriber_id, SubscriberAddress.channel == channel
        )
    ).one_or_none()


def remove(*, session: Session, subscriber_id: str, channel: str) -> bool:
    result = session.execute(
        delete(SubscriberAddress).where(
            SubscriberAddress.subscriber_id == subscriber_id, SubscriberAddress.channel == channel
        )
    )
    return dml(result).rowcount > 0


def active_for(*, session: Session, channel: str, subscribers: Iterable[str]) -> dict[str, str]:
    """Each subscriber's active address id on the channel (the delivery target)."""
    wanted = list(subscribers)
    if not wanted:
        return {}
    rows = session.execute(
        select(SubscriberAddress.subscriber_id, SubscriberAddress.id).where(
            SubscriberAddress.channel == channel,
            SubscriberAddress.subscriber_id.in_(wanted),
            SubscriberAddress.deactivated_at.is_(None),
        )
    )
    return {sub: str(id_) for sub, id_ in rows}
