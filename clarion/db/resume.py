"""What many live connections need at once when they start: heads, replays.

A herd of clients reconnecting after a restart asks the same questions for thousands of
recipients within a second; one statement per question for a whole batch costs a fraction
of one statement per connection (docs/benchmarks/stream.md, "Reconnect storm").
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, String, bindparam, func, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from clarion.db import notifications
from clarion.db.dialect import is_postgres, one_of
from clarion.db.models import InboxEvent, Notification, Subscriber
from clarion.ids import utcnow


def seqs_of(*, session: Session, ids: Sequence[str]) -> dict[str, int]:
    """Each subscriber's latest committed sequence number (unknown ids: 0)."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.seq).where(one_of(session, Subscriber.id, ids))
    )
    found = {sid: seq or 0 for sid, seq in rows}
    return {sid: found.get(sid, 0) for sid in ids}


Ask = tuple[str, int]  # (recipient, the cursor to replay after)


def _wanted(asks: Sequence[Ask]):
    """``unnest(:ids, :sinces) AS wanted(id, since)``: one row per (recipient, cursor)."""
    ids = bindparam("ids", [rid for rid, _ in asks], type_=postgresql.ARRAY(String))
    sinces = [since for _, since in asks]
    since = bindparam("sinces", sinces, type_=postgresql.ARRAY(BigInteger))
    return func.unnest(ids, since).table_valued("id", "since").render_derived(name="wanted")


def created_after_each(
    *, session: Session, asks: Sequence[Ask], limit: int
) -> dict[Ask, list[Notification]]:
    """:func:`notifications.created_after` of each (recipient, cursor) asked, in one
    statement on PostgreSQL: a LATERAL join keeps each one's LIMIT on the (recipient_id,
    seq) index."""
    found: dict[Ask, list[Notification]] = {ask: [] for ask in asks}
    if not is_postgres(session):  # SQLite (embedded mode): no arrays; one query each
        for rid, after in found:
            found[rid, after] = notifications.created_after(
                session=session, recipient_id=rid, since=after, limit=limit
            )
        return found
    if not found:
        return found
    wanted, now = _wanted(list(found)), utcnow()
    each = (
        select(Notification)
        .where(
            Notification.recipient_id == wanted.c.id,
            Notification.seq > wanted.c.since,
            Notification.in_inbox.is_(True),
            notifications._unexpired(now),
        )
        .order_by(Notification.seq)
        .limit(limit)
        .lateral("hit")
    )
    row = aliased(Notification, each)
    query = select(wanted.c.since, row).select_from(wanted).join(each, true())
    for since, notification in session.execute(query):
        found[notification.recipient_id, since].append(notification)
    return found


def events_after_each(
    *, session: Session, asks: Sequence[Ask], limit: int
) -> dict[Ask, list[InboxEvent]]:
    """:func:`notifications.events_after` of each (recipient, cursor) asked, in one
    statement on PostgreSQL."""
    found: dict[Ask, list[InboxEvent]] = {ask: [] for ask in asks}
    if not is_postgres(session):
        for rid, after in found:
            found[rid, after] = notifications.events_after(
                session=session, recipient_id=rid, since=after, limit=limit
            )
        return found
    if not found:
        return found
    wanted = _wanted(list(found))
    each = (
        select(InboxEvent)
        .where(InboxEvent.recipient_id == wanted.c.id, InboxEvent.seq > wanted.c.since)
        .order_by(InboxEvent.seq)
        .limit(limit)
        .lateral("hit")
    )
    row = aliased(InboxEvent, each)
    query = select(wanted.c.since, row).select_from(wanted).join(each, true())
    for since, event in session.execute(query):
        found[event.recipient_id, since].append(event)
    return found
