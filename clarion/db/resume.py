"""What many live connections need at once when they start: heads, replays.

A herd of clients reconnecting after a restart asks the same questions for thousands of
recipients within a second; one statement per question for a whole batch costs a fraction
of one statement per connection (docs/benchmarks/stream.md, "Reconnect storm").
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, func, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from clarion.db import recipient_inbox
from clarion.db.dialect import is_postgres, one_of_bound
from clarion.db.models import InboxEvent, Notification, Subscriber
from clarion.ids import utcnow


@lru_cache(maxsize=2)
def _seqs_statement(postgres: bool):
    # Built once, as the other statements of a start here (see _statement).
    return select(Subscriber.id, Subscriber.seq).where(one_of_bound(postgres, Subscriber.id, "ids"))


def seqs_of(*, session: Session, ids: Sequence[str]) -> dict[str, int]:
    """Each subscriber's latest committed sequence number (unknown ids: 0)."""
    rows = session.execute(_seqs_statement(is_postgres(session)), {"ids": list(ids)})
    found = {sid: seq or 0 for sid, seq in rows}
    return {sid: found.get(sid, 0) for sid in ids}


Ask = tuple[str, int]  # (recipient, the cursor to replay after)


def _after_each_statement(model: Any, limit: int, *where):
    """The PostgreSQL statement of :func:`_after_each`, with ``:ids``, ``:sinces`` (and
    whatever ``where`` binds) as parameters."""
    ids = bindparam("ids", type_=postgresql.ARRAY(String))
    since = bindparam("sinces", type_=postgresql.ARRAY(BigInteger))
    wanted = func.unnest(ids, since).table_valued("id", "since").render_derived(name="wanted")
    each = (
        select(model)
        .where(model.recipient_id == wanted.c.id, model.seq > wanted.c.since, *where)
        .order_by(model.seq)
        .limit(limit)
        .lateral("hit")
    )
    row = aliased(model, each)
    return select(wanted.c.since, row).select_from(wanted).join(each, true())


@lru_cache(maxsize=16)
def _statement(which: str, limit: int):
    """Built once per (question, limit) rather than per batch: building a statement and its
    cache key cost more CPU than its rows in a herd's start (docs/benchmarks/stream.md)."""
    if which == "events":
        return _after_each_statement(InboxEvent, limit)
    shown = (Notification.in_inbox.is_(True), recipient_inbox.unexpired(bindparam("now")))
    return _after_each_statement(Notification, limit, *shown)


def _after_each(session: Session, asks: Sequence[Ask], limit: int, which: str, one, **params):
    """Rows after each (recipient, cursor) asked, oldest first, at most ``limit`` each: one
    statement on PostgreSQL (a LATERAL join keeps each one's LIMIT on the (recipient_id,
    seq) index); on SQLite (embedded mode, no arrays) ``one`` per ask."""
    found: dict[Ask, list] = {ask: [] for ask in asks}
    if not is_postgres(session):
        for rid, after in found:
            found[rid, after] = one(session=session, recipient_id=rid, since=after, limit=limit)
        return found
    if not found:
        return found
    ids = [rid for rid, _ in found]
    sinces = [since for _, since in found]
    query = _statement(which, limit)
    for since, hit in session.execute(query, {"ids": ids, "sinces": sinces, **params}):
        found[hit.recipient_id, since].append(hit)
    return found


def created_after_each(
    *, session: Session, asks: Sequence[Ask], limit: int
) -> dict[Ask, list[Notification]]:
    """:func:`recipient_inbox.created_after` of each (recipient, cursor) asked."""
    one = recipient_inbox.created_after
    return _after_each(session, asks, limit, "created", one, now=utcnow())


def events_after_each(
    *, session: Session, asks: Sequence[Ask], limit: int
) -> dict[Ask, list[InboxEvent]]:
    """:func:`recipient_inbox.events_after` of each (recipient, cursor) asked."""
    return _after_each(session, asks, limit, "events", recipient_inbox.events_after)
