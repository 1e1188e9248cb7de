"""The one place that knows PostgreSQL and SQLite spell things apart ("insert, ignore
conflicts", "one of these many keys")."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import CursorResult, Result, String, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def insert_for(session: Session, table):
    """A dialect insert construct supporting ``on_conflict_do_nothing``/``do_update``."""
    return _INSERTS[session.get_bind().dialect.name](table)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def one_of_bound(postgres: bool, column, name: str):
    """:func:`one_of` of string keys bound later as ``name``, for a statement built once."""
    if postgres:
        return column == any_(bindparam(name, type_=postgresql.ARRAY(String)))
    return column.in_(bindparam(name, expanding=True))


def one_of(session: Session, column, values: Collection, item_type=None):
    """``column IN values`` for a large batch of keys (strings unless ``item_type``).

    On PostgreSQL it is ``column = ANY(:array)``: one bound array instead of one parameter
    per value, much faster for a thousand ids (the create step looks a whole batch up at
    once; docs/benchmarks/code.md). SQLite has no arrays and gets the plain IN.
    """
    if is_postgres(session):
        array = postgresql.ARRAY(item_type if item_type is not None else String)
        return column == any_(bindparam(None, list(values), type_=array))
    return column.in_(list(values))


def lock_name(session: Session, name: str) -> None:
    """Serialise the transactions that take this name, until they end (commit or roll
    back). PostgreSQL: a transaction-level advisory lock on the name's 64-bit hash; SQLite
    serialises writers anyway."""
    if is_postgres(session):
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))


def dml(result: Result[Any]) -> CursorResult[Any]:
    """The result of an INSERT, UPDATE or DELETE, as what it is: ``Session.execute`` types
    every result as ``Result``, which has no ``rowcount`` nor ``inserted_primary_key``."""
    return cast(CursorResult[Any], result)
