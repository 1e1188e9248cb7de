"""Bulk inserts for the create step: COPY on PostgreSQL, an executemany INSERT elsewhere.

A topic fan-out writes a thousand notifications and as many deliveries per transaction.
psycopg runs an executemany as one INSERT per row (pipelined, but each still parsed and
planned by the server); COPY streams the rows into one command, about three times faster
for the whole insert here (bench/fanout.py).
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, insert
from sqlalchemy.orm import Session

from clarion.db.dialect import is_postgres


def insert_rows(*, session: Session, model: type, rows: list[dict[str, Any]]) -> None:
    """Insert plain rows (keyed by the model's attribute names) in the session's
    transaction. Conflicts are errors, as with a plain INSERT."""
    if not rows:
        return
    columns = _copyable(model, rows) if is_postgres(session) else None
    if columns is None:
        session.execute(insert(model), rows)
        return
    session.flush()  # COPY goes around the ORM: nothing of it may still be pending
    keys = list(rows[0])
    wrap = [isinstance(c.type, JSON) for c in columns]
    names = ", ".join(session.get_bind().dialect.identifier_preparer.quote(c.name) for c in columns)
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {model.__tablename__} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    Jsonb(row[k]) if is_json and row[k] is not None else row[k]
                    for k, is_json in zip(keys, wrap, strict=True)
                ]
            )


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
