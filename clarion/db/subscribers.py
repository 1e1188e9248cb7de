"""Subscriber repository."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.orm import Session

from clarion.db import roundtrip
from clarion.db.dialect import dml, insert_for, is_postgres
from clarion.db.models import Subscriber
from clarion.db.notifications import erase_for_recipient

PROFILE_FIELDS = ("email", "locale", "timezone", "name", "data")


def ensure(*, session: Session, ids: Sequence[str], now: datetime) -> None:
    """Create bare subscribers for ids not seen before; existing ones are untouched.

    Sorted, like ``lock``: two transactions inserting the same new ids in opposite orders
    would otherwise deadlock on PostgreSQL's speculative-insert locks.
    """
    if not ids:
        return
    new = sorted(set(ids))
    if is_postgres(session):
        # One statement for the batch (an executemany is one INSERT per id on the server).
        session.execute(_ENSURE_PG, {"ids": new, "now": now})
        return
    stmt = insert_for(session, Subscriber).on_conflict_do_nothing(index_elements=["id"])
    session.execute(
        stmt, [{"id": i, "data": {}, "seq": 0, "created_at": now, "updated_at": now} for i in new]
    )


_ENSURE_PG = text(
    "INSERT INTO subscribers (id, data, seq, created_at, updated_at)"
    " SELECT i, '{}', 0, :now, :now FROM unnest(CAST(:ids AS varchar[])) AS i ORDER BY i"
    " ON CONFLICT (id) DO NOTHING"
)
# The redundant "id = ANY" makes the plan start from the primary key: with only the join,
# PostgreSQL hashes the whole table once it thinks 1,000 index probes cost more than a scan.
_SET_SEQS_PG = text(
    "UPDATE subscribers AS s SET seq = v.seq"
    " FROM unnest(CAST(:ids AS varchar[]), CAST(:seqs AS bigint[])) AS v(id, seq)"
    " WHERE s.id = v.id AND s.id = ANY(CAST(:ids AS varchar[]))"
)


@dataclass(frozen=True)
class Reserved:
    """What :func:`reserve_seqs` took: each subscriber's sequence before the reservation,
    and what routing and templates need to know of them, read by the same statement:
    (subscriber, timezone, quiet start, quiet end) of those with a zone or quiet hours, who
    stored any preference (most never do, and then routing reads no preference table), and
    each one's locale."""

    seqs: dict[str, int]
    profiles: list[tuple[str, str | None, str | None, str | None]]
    # Those with a stored switch or digest choice (on SQLite: all, it does not look).
    with_choices: set[str]
    # The locale of those who have one (templates render in it).
    locales: dict[str, str]


def reserve_seqs(*, session: Session, counts: dict[str, int], now: datetime) -> Reserved:
    """Create the subscribers not seen before, lock them all in id order until commit, and
    advance each one's sequence by its count; returns the sequences before the advance.

    One order for everyone means concurrent transactions touching overlapping recipients
    queue up instead of deadlocking; holding the lock to commit is what makes one
    recipient's notifications commit in sequence order. The caller stores the final value
    with :func:`set_seqs` when it used fewer numbers than it reserved (a rerun, a dedupe
    key), so the sequence stays gapless. On PostgreSQL this is one statement
    (:func:`reserve_query`), where create, lock and store would be three round trips.
    (SQLite serialises writers anyway.)
    """
    if is_postgres(session):
        return roundtrip.together(session, reserve_query(counts=counts, now=now))[0]
    ids = sorted(counts)
    ensure(session=session, ids=ids, now=now)
    locked = session.execute(
        select(*_RESERVED_COLUMNS).where(Subscriber.id.in_(ids)).order_by(Subscriber.id)
    )
    rows = [(sid, seq + counts[sid], *rest, None) for sid, seq, *rest in locked]
    set_seqs(session=session, seqs={row[0]: row[1] for row in rows})
    return _reserved(rows, counts)


def reserve_query(*, counts: dict[str, int], now: datetime) -> roundtrip.Query[Reserved]:
    """:func:`reserve_seqs` on PostgreSQL, as a query to send with others."""
    ids = sorted(counts)
    params = {"ids": ids, "counts": [counts[i] for i in ids], "now": now}
    return roundtrip.Query(_RESERVE_PG, params, lambda rows: _reserved(rows, counts))


def _reserved(rows, counts: dict[str, int]) -> Reserved:
    """Rows of (id, seq after the advance, timezone, quiet start, quiet end, locale, stored
    any preference: None when not known)."""
    seqs, profiles, choices, locales = {}, [], set(), {}
    for sid, seq, timezone, start, end, locale, chose in rows:
        seqs[sid] = seq - counts[sid]
        if timezone is not None or start is not None:
            profiles.append((sid, timezone, start, end))
        if locale is not None:
            locales[sid] = locale
        if chose is not False:
            choices.add(sid)
    return Reserved(seqs, profiles, choices, locales)


_RESERVED_COLUMNS = (
    Subscriber.id,
    Subscriber.seq,
    Subscriber.timezone,
    Subscriber.quiet_hours_start,
    Subscriber.quiet_hours_end,
    Subscriber.locale,
)
# The insert takes the rows in id order, and ON CONFLICT DO UPDATE locks each existing row
# as it comes: the lock order of lock-then-update, in one round trip. RETURNING gives the
# sequence after the advance (a new subscriber starts at its count). The arrays go in
# binary (%b): the text form costs psycopg a regex per element and the server a parse
# (docs/benchmarks/code.md).
_RESERVE_PG = (
    "INSERT INTO subscribers AS s (id, data, seq, created_at, updated_at)"
    " SELECT v.id, '{}', v.n, %(now)s, %(now)s"
    " FROM unnest(CAST(%(ids)b AS varchar[]), CAST(%(counts)b AS bigint[])) AS v(id, n)"
    " ORDER BY v.id"
    " ON CONFLICT (id) DO UPDATE SET seq = s.seq + EXCLUDED.seq"
    " RETURNING s.id, s.seq, s.timezone, s.quiet_hours_start, s.quiet_hours_end, s.locale,"
    " EXISTS (SELECT FROM preferences AS p WHERE p.subscriber_id = s.id)"
    " OR EXISTS (SELECT FROM category_preferences AS c WHERE c.subscriber_id = s.id)"
)


def set_seqs(*, session: Session, seqs: dict[str, int]) -> None:
    """Store new sequence values of locked subscribers, in one statement."""
    if seqs and is_postgres(session):
        session.connection().execute(_SET_SEQS_PG, {"ids": list(seqs), "seqs": list(seqs.values())})
    elif seqs:
        session.execute(
            update(Subscriber.__table__)
            .where(Subscriber.__table__.c.id == bindparam("sid"))
            .values(seq=bindparam("new_seq")),
            [{"sid": sid, "new_seq": seq} for sid, seq in seqs.items()],
        )


def bump_seq(*, session: Session, id: str) -> int:
    """Take the subscriber's next sequence number; the row stays locked until commit."""
    return session.execute(
        update(Subscriber)
        .where(Subscriber.id == id)
        .values(seq=Subscriber.seq + 1)
        .returning(Subscriber.seq)
    ).scalar_one()


def seq_of(*, session: Session, id: str) -> int:
    """The subscriber's latest committed sequence number (0 for unknown ids)."""
    return session.scalar(select(Subscriber.seq).where(Subscriber.id == id)) or 0


def get(*, session: Session, id: str) -> Subscriber | None:
    return session.get(Subscriber, id)


def upsert(*, session: Session, id: str, profile: dict[str, Any], now: datetime) -> Subscriber:
    """Create or replace a subscriber's profile fields; the sequence is never reset."""
    values = {field: profile.get(field) for field in PROFILE_FIELDS}
    values["data"] = values["data"] or {}
    stmt = insert_for(session, Subscriber).values(
        id=id, seq=0, created_at=now, updated_at=now, **values
    )
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={**values, "updated_at": now})
    session.execute(stmt)
    session.expire_all()
    return session.get(Subscriber, id)


def erase(*, session: Session, id: str) -> bool:
    """Delete a subscriber with every notification and delivery of theirs (GDPR erasure)."""
    erase_for_recipient(session=session, recipient_id=id)
    return dml(session.execute(delete(Subscriber).where(Subscriber.id == id))).rowcount > 0
