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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError
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
    raw = driver_connection(session)
    cursors = []
    with as_sqlalchemy_errors("; ".join(q.sql for q in queries)):
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


def driver_connection(session: Session) -> psycopg.Connection:
    """The session's psycopg connection, for statements that go around SQLAlchemy."""
    session.flush()  # nothing of the ORM's may still be pending
    return session.connection().connection.driver_connection


@contextmanager
def as_sqlalchemy_errors(statement: str) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy's, as if SQLAlchemy had run the statement:
    the tasks retry on SQLAlchemy's OperationalError and DBAPIError (a lost connection, a
    deadlock victim), and would fail outright on a bare psycopg error."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
