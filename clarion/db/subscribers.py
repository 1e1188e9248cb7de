"""Subscriber repository."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.orm import Session

from clarion.db.dialect import insert_for, is_postgres, one_of
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


def lock_seqs(*, session: Session, ids: Sequence[str]) -> dict[str, int]:
    """Lock subscriber rows in id order until commit and return their sequences.

    One order for everyone means concurrent transactions touching overlapping recipients
    queue up instead of deadlocking; holding the lock to commit is what makes one
    recipient's notifications commit in sequence order. (SQLite serialises writers anyway.)
    """
    if not ids:
        return {}
    rows = session.execute(
        select(Subscriber.id, Subscriber.seq)
        .where(one_of(session, Subscriber.id, sorted(set(ids))))
        .order_by(Subscriber.id)
        .with_for_update()
    )
    return {row.id: row.seq for row in rows}


def set_seqs(*, session: Session, seqs: dict[str, int]) -> None:
    """Store new sequence values of locked subscribers, in one statement."""
    if seqs and is_postgres(session):
        session.execute(_SET_SEQS_PG, {"ids": list(seqs), "seqs": list(seqs.values())})
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


def locales(*, session: Session, ids: Sequence[str]) -> dict[str, str]:
    """The locale of each of these subscribers that has one (one query for a batch)."""
    if not ids:
        return {}
    rows = session.execute(
        select(Subscriber.id, Subscriber.locale).where(
            Subscriber.id.in_(sorted(set(ids))), Subscriber.locale.is_not(None)
        )
    )
    return {row.id: row.locale for row in rows}


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
    return session.execute(delete(Subscriber).where(Subscriber.id == id)).rowcount > 0
