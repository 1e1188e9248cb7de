"""Bulk inserts for the create step: COPY on PostgreSQL, an executemany INSERT elsewhere.

A topic fan-out writes a thousand notifications and as many deliveries per transaction.
psycopg runs an executemany as one INSERT per row (pipelined, but each still parsed and
planned by the server); COPY streams the rows into one command, several times faster for
the whole insert (docs/benchmarks/code.md). A create of a few notifications is the other
way round: COPY's own round trips cost more than the rows, so small inserts of all the
tables go out as one pipeline, one round trip.
"""

from __future__ import annotations

import datetime
import functools
import json
import operator
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, insert
from sqlalchemy.orm import Session

from clarion.db import roundtrip
from clarion.db.dialect import is_postgres

# Below this many rows a table's insert is one INSERT per row in a pipeline, sent with the
# other small tables' in one round trip; COPY pays two round trips of its own (start, end),
# which a lone notification's create would notice, and wins only on bigger batches.
COPY_MIN_ROWS = 32

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
            sql = _copy_sql(model.__tablename__, _names(cols))
            with raw.cursor() as cur, cur.copy(sql) as copy:
                for values in _shared_once(_values(rows, cols, _json_text()), cur):
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
def _copy_sql(table: str, names: tuple[str, ...]) -> bytes:
    return sql.SQL("COPY {} FROM STDIN").format(_target(table, names)).as_bytes()


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


def _shared_once(table: list[Any], cur: psycopg.Cursor) -> list[Any]:
    """The rows with each value that all of them share (the same object, first and last
    row) dumped once, by psycopg's own text dumper, and passed on as that text: a fan-out
    batch's rows share their request's id and accepted time, whose dumpers are Python
    (UUID) or slow (aware datetimes), and COPY would call them once per row. The text is
    escaped as the dumper's output would be, so COPY receives the same bytes."""
    first, last = table[0], table[-1]
    shared = [
        (i, value)
        for i, value in enumerate(first)
        if type(value) in _DUMPED_ONCE and last[i] is value
    ]
    if not shared:
        return table
    adapt = Transformer.from_context(cur)  # the dumper COPY itself would pick
    texts = [
        (i, value, bytes(adapt.get_dumper(value, PyFormat.TEXT).dump(value)).decode())
        for i, value in shared
    ]
    rows = table if type(first) is list else [list(values) for values in table]
    for values in rows:
        for i, value, text in texts:
            if values[i] is value:
                values[i] = text
    return rows


# Types whose text dumper is worth calling once per batch rather than once per row.
_DUMPED_ONCE = frozenset({uuid.UUID, datetime.datetime})


def _json_text() -> Callable[[Any], str]:
    """JSON as the text COPY reads into a json/jsonb column, encoded once per object: a
    fan-out batch's rows share their content's metadata and data objects, which a
    ``Jsonb`` wrapper would encode again for every row. Only for one call of
    :func:`_values` (the rows keep the objects alive, so an id is not reused meanwhile)."""
    done: dict[int, str] = {}

    def text(value: Any) -> str:
        key = id(value)
        if key not in done:
            done[key] = json.dumps(value)
        return done[key]

    return text


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
