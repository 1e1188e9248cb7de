"""Bulk inserts for the create step: COPY on PostgreSQL, an executemany INSERT elsewhere.

A topic fan-out writes a thousand notifications and as many deliveries per transaction.
psycopg runs an executemany as one INSERT per row (pipelined, but each still parsed and
planned by the server); COPY streams the rows into one command, several times faster for
the whole insert (docs/benchmarks/code.md). A create of a few notifications is the other
way round: COPY's own round trips cost more than the rows, so small inserts of all the
tables go out as one pipeline, one round trip.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable
from typing import Any

from psycopg import postgres, sql
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from clarion.db import roundtrip
from clarion.db.dialect import is_postgres

# Below this many rows a table's insert is one INSERT per row in a pipeline, sent with the
# other small tables' in one round trip; COPY pays two round trips of its own (start, end),
# which a lone notification's create would notice, and wins only on bigger batches.
COPY_MIN_ROWS = 32
_POSTGRES = postgresql.dialect()

Rows = list[dict[str, Any]]


def insert_tables(*, session: Session, tables: list[tuple[type, Rows]]) -> None:
    """Insert plain rows (keyed by the model's attribute names) of several tables, in the
    order given (parents first), in the session's transaction. Conflicts are errors, as
    with a plain INSERT."""
    pending = [(model, rows) for model, rows in tables if rows]
    if not pending:
        return
    columns = [_copyable(model, rows) if is_postgres(session) else None for model, rows in pending]
    if any(c is None for c in columns):
        for model, rows in pending:
            session.execute(insert(model), rows)
        return
    raw = roundtrip.driver_connection(session)
    tables = ", ".join(model.__tablename__ for model, _ in pending)
    if all(len(rows) < COPY_MIN_ROWS for _, rows in pending):
        with (
            roundtrip.as_sqlalchemy_errors(f"INSERT INTO {tables}"),
            raw.pipeline(),
            raw.cursor() as cur,
        ):
            for (model, rows), cols in zip(pending, columns, strict=True):
                sql = _insert_sql(model.__tablename__, _names(cols))
                cur.executemany(sql, _values(rows, cols, Jsonb))
        return
    with roundtrip.as_sqlalchemy_errors(f"COPY {tables}"):
        for (model, rows), cols in zip(pending, columns, strict=True):
            names = _names(cols)
            types = _binary_types(model, names)
            sql = _copy_sql(model.__tablename__, names, binary=types is not None)
            with raw.cursor() as cur, cur.copy(sql) as copy:
                if types is not None:
                    copy.set_types(types)
                as_json = _once(json.dumps if types is None else _jsonb_encoded)
                for values in _values(rows, cols, as_json):
                    copy.write_row(values)


def _names(columns: list) -> tuple[str, ...]:
    return tuple(c.name for c in columns)


def _target(table: str, names: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("{} ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )


@functools.cache
def _insert_sql(table: str, names: tuple[str, ...]) -> bytes:
    values = sql.SQL(", ").join([sql.Placeholder()] * len(names))
    return sql.SQL("INSERT INTO {} VALUES ({})").format(_target(table, names), values).as_bytes()


@functools.cache
def _copy_sql(table: str, names: tuple[str, ...], *, binary: bool = False) -> bytes:
    query = "COPY {} FROM STDIN (FORMAT BINARY)" if binary else "COPY {} FROM STDIN"
    return sql.SQL(query).format(_target(table, names)).as_bytes()


@functools.cache
def _binary_types(model: type, names: tuple[str, ...]) -> list[int] | None:
    """The columns' PostgreSQL type oids for a binary COPY, or None (a text COPY) when one
    is not a built-in type psycopg knows. Binary spares psycopg formatting each value as
    text; the server reads either at the same cost (docs/benchmarks/fanout.md)."""
    table = model.__table__
    oids = []
    for name in names:
        compiled = table.columns[name].type.compile(dialect=_POSTGRES)
        info = postgres.types.get(compiled.split("(")[0].lower())  # "VARCHAR(255)": varchar
        if info is None:
            return None
        oids.append(info.oid)
    return oids


def _values(rows: Rows, columns: list, as_json: Callable[[Any], Any]) -> list[Any]:
    """The rows as lists in the columns' order, JSON values passed through ``as_json``."""
    # By key, not by dict order: rows with the same keys may list them in another order.
    keys = list(rows[0])
    get = operator.itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
    wrapped = [i for i, c in enumerate(columns) if isinstance(c.type, JSON)]
    if not wrapped:
        return [get(row) for row in rows]
    table = []
    for row in rows:
        values = list(get(row))
        for i in wrapped:
            if values[i] is not None:
                values[i] = as_json(values[i])
        table.append(values)
    return table


def _once(encode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``encode`` called once per JSON object: a fan-out batch's rows share their content's
    metadata and data objects, which COPY would otherwise encode again for every row. Only
    for one call of :func:`_values` (the rows keep the objects alive, so an id is not
    reused meanwhile)."""
    done: dict[int, Any] = {}

    def get(value: Any) -> Any:
        key = id(value)
        if key not in done:
            done[key] = encode(value)
        return done[key]

    return get


def _jsonb_encoded(value: Any) -> Jsonb:
    """A value for a binary COPY's jsonb column whose JSON is encoded here, once (psycopg's
    dumper would encode it again for every row that holds the object)."""
    data = json.dumps(value).encode()
    return Jsonb(value, dumps=lambda _: data)


def _copyable(model: type, rows: list[dict[str, Any]]) -> list | None:
    """The columns of the rows' keys, or None when COPY would not mean the same as the
    ORM's INSERT: rows with different keys, or a column with a Python-side default left
    out (COPY knows only the server's defaults)."""
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        return None
    mapper = model.__mapper__
    defaulted = {a.key for a in mapper.column_attrs if a.columns[0].default is not None}
    if not defaulted <= set(keys):
        return None
    return [mapper.attrs[k].columns[0] for k in keys]
