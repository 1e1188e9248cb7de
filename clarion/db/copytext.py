"""COPY's text format for a batch of rows, with what the rows share formatted once.

A fan-out batch's thousand notification rows differ only in id, recipient and sequence: the
request, category, title, body, metadata, times and flags are the same objects in every
row. psycopg's ``write_row`` dumps and escapes every value of every row; here a column
whose rows all hold the one same object is dumped once, consecutive shared columns become
one piece of text, and each line joins the few pieces that differ (ids, plain strings and
integers formatted in C where they can be). The text is what ``write_row`` would send:
each value by the same psycopg dumper, escaped the same way.
"""

from __future__ import annotations

import json
import operator
import re
import uuid
from collections.abc import Callable
from itertools import repeat
from typing import Any

from psycopg.abc import Transformer
from psycopg.adapt import PyFormat
from sqlalchemy import JSON

NULL = "\\N"
_INT = operator.attrgetter("int")
# What COPY's text format escapes (as psycopg does: backslash and these controls); a NUL
# goes by the dumper, which refuses it as before.
_SPECIAL = re.compile("[\b\t\n\v\f\r\\\\\x00]")
_ESCAPES = str.maketrans(
    {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r", "\\": "\\\\"}
)


def table(rows: list[dict[str, Any]], columns: list, tx: Transformer) -> str:
    """The rows (plain dicts with the same keys, in ``columns``' order of those keys) as
    COPY text, one line each."""
    keys = list(rows[0])
    as_json = _json_text()
    dump = _dumper(tx)
    pieces: list[list[str]] = []  # per output piece, one text per row
    shared: list[str] = []  # consecutive shared columns, not yet closed into a piece
    n = len(rows)
    for key, column in zip(keys, columns, strict=True):
        values = list(map(operator.itemgetter(key), rows))
        first = values[0]
        if isinstance(column.type, JSON):
            values = [None if v is None else as_json(v) for v in values]
            first = values[0]
        if all(map(operator.is_, values, repeat(first))):
            shared.append(dump(first))
            continue
        if shared:
            pieces.append(["\t".join(shared)] * n)
            shared = []
        pieces.append(_column(values, dump))
    if shared:
        pieces.append(["\t".join(shared)] * n)
    return "\n".join(map("\t".join, zip(*pieces, strict=True))) + "\n"


def _column(values: list[Any], dump: Callable[[Any], str]) -> list[str]:
    """One column's text per row: strings, UUIDs and integers in C, the rest by psycopg."""
    kinds = set(map(type, values))
    if kinds == {str} and not _SPECIAL.search("".join(values)):
        return values
    if kinds == {uuid.UUID}:  # psycopg's text form of a UUID
        return list(map("%032x".__mod__, map(_INT, values)))
    if kinds == {int}:
        return list(map(str, values))
    return list(map(dump, values))


def _dumper(tx: Transformer) -> Callable[[Any], str]:
    """One value as COPY text, by psycopg's text dumper for it, escaped as ``write_row``
    escapes it."""
    encoding = tx.encoding

    def dump(value: Any) -> str:
        if value is None:
            return NULL
        if type(value) is str and not _SPECIAL.search(value):
            return value
        out = tx.dump_sequence([value], [PyFormat.TEXT])[0]
        if out is None:
            return NULL
        return bytes(out).decode(encoding).translate(_ESCAPES)

    return dump


def _json_text() -> Callable[[Any], str]:
    """JSON as the text COPY reads into a json/jsonb column, encoded once per object: a
    fan-out batch's rows share their content's metadata and data objects. Only for one
    batch (the rows keep the objects alive, so an id is not reused meanwhile). The same
    text object comes back for the same object, so its column stays shared."""
    done: dict[int, str] = {}

    def text(value: Any) -> str:
        key = id(value)
        if key not in done:
            done[key] = json.dumps(value)
        return done[key]

    return text
