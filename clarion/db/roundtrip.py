"""Several PostgreSQL statements in one round trip (psycopg's pipeline mode).

The create step is a handful of short statements per task, and on a busy machine each
round trip costs more than the statement: the worker waits for the server to be scheduled,
answer, and for itself to be scheduled again. Statements that do not need each other's
answers in Python can be sent together. Each one still runs after the previous one has
finished and takes its own snapshot (READ COMMITTED), so a row lock taken by the first is
held when the second reads: the semantics of separate round trips, without the waits. The
transaction's BEGIN goes out in the same packet. Statements sent this way are prepared by
psycopg after a few uses, so the server stops parsing and planning them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Query(Generic[T]):
    """A statement with psycopg placeholders (``%(name)s``), its parameters, and what
    becomes of its rows."""

    sql: str
    params: dict[str, Any]
    decode: Callable[[list[tuple]], T]


def together(session: Session, *queries: Query) -> tuple:
    """Run the queries in order in the session's transaction, in one round trip; returns
    each one's decoded rows. PostgreSQL only."""
    session.flush()  # around the ORM: nothing of it may still be pending
    raw = session.connection().connection.driver_connection
    cursors = []
    with raw.pipeline():
        for query in queries:
            cursor = raw.cursor()
            cursor.execute(query.sql, query.params)
            cursors.append(cursor)
    try:
        return tuple(q.decode(c.fetchall()) for q, c in zip(queries, cursors, strict=True))
    finally:
        for cursor in cursors:
            cursor.close()
