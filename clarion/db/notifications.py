"""Notifications and their deliveries as stored: what create checks and inserts, a
notification's deliveries, collapse replacements, a recipient's erasure. What a recipient's
inbox shows and changes is ``clarion.db.recipient_inbox``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.orm import Session

from clarion.db import bulk, roundtrip
from clarion.db.dialect import is_postgres
from clarion.db.models import Delivery, InboxEvent, Notification, ScheduledNotification


def existing_ids(*, session: Session, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """The ones of these ids already stored (create asks on every task)."""
    if is_postgres(session):
        return roundtrip.together(session, existing_query(ids=ids))[0]
    rows = session.execute(select(Notification.id).where(Notification.id.in_(list(ids))))
    return set(rows.scalars())


def existing_query(*, ids: Sequence[uuid.UUID]) -> roundtrip.Query[set[uuid.UUID]]:
    """:func:`existing_ids` on PostgreSQL, as a query to send with others (the ids in
    binary, as in ``subscribers.reserve_query``)."""
    return roundtrip.Query(
        "SELECT id FROM notifications WHERE id = ANY(%(ids)b)",
        {"ids": list(ids)},
        lambda rows: {row[0] for row in rows},
    )


def dedupe_pairs(
    *, session: Session, keys: Iterable[str], recipients: Iterable[str]
) -> set[tuple[str, str]]:
    """(recipient, dedupe key) pairs already stored among these keys and recipients."""
    rows = session.execute(
        select(Notification.recipient_id, Notification.dedupe_key).where(
            Notification.dedupe_key.in_(list(keys)), Notification.recipient_id.in_(list(recipients))
        )
    )
    return {(row.recipient_id, row.dedupe_key) for row in rows}


def insert_many(
    *, session: Session, rows: list[dict[str, Any]], deliveries: list[dict[str, Any]]
) -> None:
    """Insert new notifications and their deliveries (one round trip for a small batch)."""
    bulk.insert_tables(session=session, tables=[(Notification, rows), (Delivery, deliveries)])


def pending_deliveries(
    *, session: Session, notification_ids: Sequence[uuid.UUID], channels: Iterable[str]
) -> list[tuple[uuid.UUID, str]]:
    """(delivery id, channel) of deliveries still waiting to be sent on these channels."""
    rows = session.execute(
        select(Delivery.id, Delivery.channel).where(
            Delivery.notification_id.in_(notification_ids),
            Delivery.channel.in_(list(channels)),
            Delivery.status == "pending",
        )
    )
    return [(row.id, row.channel) for row in rows]


def get(*, session: Session, id: uuid.UUID) -> Notification | None:
    return session.get(Notification, id)


def deliveries_of(*, session: Session, notification: Notification, inbox: str) -> list[Delivery]:
    """Its deliveries by channel, the in-app one included: a notification shown in the
    inbox is its own in-app delivery (sent when it was stored; no row is kept for it), so
    that one is made here, not read (it is not added to the session). ``inbox``: the
    inbox channel's key (clarion.channels.INBOX; the layers below channels do not know it)."""
    rows = list(
        session.scalars(select(Delivery).where(Delivery.notification_id == notification.id))
    )
    if notification.in_inbox:
        at = notification.created_at
        rows.append(
            Delivery(
                notification_id=notification.id,
                channel=inbox,
                target="",
                status="sent",
                attempts=1,
                created_at=at,
                updated_at=at,
            )
        )
    return sorted(rows, key=lambda d: d.channel)


def collapsible(*, session: Session, pairs: list[tuple[str, str]]) -> list[Any]:
    """Undeleted notifications with these (recipient, collapse_key) pairs, in seq order."""
    return list(
        session.execute(
            select(
                Notification.id,
                Notification.recipient_id,
                Notification.collapse_key,
                Notification.in_inbox,
            )
            .where(
                tuple_(Notification.recipient_id, Notification.collapse_key).in_(pairs),
                Notification.deleted_at.is_(None),
            )
            .order_by(Notification.recipient_id, Notification.seq)
        ).all()
    )


def mark_replaced(*, session: Session, replaced: dict[uuid.UUID, uuid.UUID], now: datetime) -> None:
    """Soft-delete each notification in ``replaced`` (old id → the id that replaced it)."""
    table = Notification.__table__
    session.execute(
        update(table)
        .where(table.c.id == bindparam("old"), table.c.deleted_at.is_(None))
        .values(deleted_at=now, replaced_by=bindparam("new")),
        [{"old": old, "new": new} for old, new in replaced.items()],
    )


def erase_for_recipient(*, session: Session, recipient_id: str) -> None:
    ids = select(Notification.id).where(Notification.recipient_id == recipient_id)
    session.execute(delete(InboxEvent).where(InboxEvent.recipient_id == recipient_id))
    # Not yet released, and never to be: a release would bring the subscriber back.
    session.execute(
        delete(ScheduledNotification).where(ScheduledNotification.recipient_id == recipient_id)
    )
    session.execute(delete(Delivery).where(Delivery.notification_id.in_(ids)))
    session.execute(delete(Notification).where(Notification.recipient_id == recipient_id))
