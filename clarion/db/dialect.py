"""The one place that knows PostgreSQL and SQLite spell "insert, ignore conflicts" apart."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def insert_for(session: Session, table):
    """A dialect insert construct supporting ``on_conflict_do_nothing``/``do_update``."""
    return _INSERTS[session.get_bind().dialect.name](table)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
