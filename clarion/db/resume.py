"""What many live connections need at once when they start: heads, replays.

A herd of clients reconnecting after a restart asks the same questions for thousands of
recipients within a second; one statement per question for a whole batch costs a fraction
of one statement per connection (docs/benchmarks/stream.md, "Reconnect storm").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, func, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from clarion.db import recipient_inbox
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


def _after_each(session: Session, asks: Sequence[Ask], limit: int, model: Any, one, *where):
    """Rows of ``model`` after each (recipient, cursor) asked, oldest first, at most
    ``limit`` each: one statement on PostgreSQL (a LATERAL join keeps each one's LIMIT on
    the (recipient_id, seq) index); on SQLite (embedded mode, no arrays) ``one`` per ask."""
    found: dict[Ask, list] = {ask: [] for ask in asks}
    if not is_postgres(session):
        for rid, after in found:
            found[rid, after] = one(session=session, recipient_id=rid, since=after, limit=limit)
        return found
    if not found:
        return found
    wanted = _wanted(list(found))
    each = (
        select(model)
        .where(model.recipient_id == wanted.c.id, model.seq > wanted.c.since, *where)
        .order_by(model.seq)
        .limit(limit)
        .lateral("hit")
    )
    row = aliased(model, each)
    query = select(wanted.c.since, row).select_from(wanted).join(each, true())
    for since, hit in session.execute(query):
        found[hit.recipient_id, since].append(hit)
    return found


def created_after_each(
    *, session: Session, asks: Sequence[Ask], limit: int
) -> dict[Ask, list[Notification]]:
    """:func:`recipient_inbox.created_after` of each (recipient, cursor) asked."""
    shown = (Notification.in_inbox.is_(True), recipient_inbox.unexpired(utcnow()))
    return _after_each(session, asks, limit, Notification, recipient_inbox.created_after, *shown)


def events_after_each(
    *, session: Session, asks: Sequence[Ask], limit: int
) -> dict[Ask, list[InboxEvent]]:
    """:func:`recipient_inbox.events_after` of each (recipient, cursor) asked."""
    return _after_each(session, asks, limit, InboxEvent, recipient_inbox.events_after)
