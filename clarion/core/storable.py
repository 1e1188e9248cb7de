"""What the database can store: the one definition every input is checked against.

PostgreSQL refuses a NUL character in text and in JSONB strings (``\\u0000``), cannot
encode a lone UTF-16 surrogate (``\\ud800``) that JSON escapes smuggle into a Python
string, and refuses ``NaN``/``Infinity`` in JSONB, which Python's JSON parser accepts. A
value it refuses must be a 422 at the API, not a 202 whose create task then fails with
the other requests of its batch. Nesting is bounded too: PostgreSQL stores deep JSON, but
every Python layer on the way (pydantic, ``json.dumps``, the driver) recurses into it.

:class:`StorableModel` applies :func:`find` to every field of a request model, and the
API applies it to path and query parameters (``clarion.api.deps``), so a new field or
parameter is covered without anyone remembering to.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from itertools import chain
from typing import Annotated, Any, ClassVar, get_args

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# NUL, and the surrogate range, which UTF-8 cannot encode.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_DEPTH = 32

# An integer a BIGINT column (ids, cursors) can hold: bigger ones are a 422, not a 500.
MAX_BIGINT = 2**63 - 1
BigInt = Annotated[int, Field(ge=-MAX_BIGINT - 1, le=MAX_BIGINT)]


def in_utc_range(value: datetime) -> datetime:
    """An instant that can be stored *and read back*: PostgreSQL keeps timestamps far past
    year 9999, but Python's datetime, and so the driver, cannot load them, and one such
    ``expires_at`` made its recipient's inbox a 500."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is outside the years 1 to 9999 once in UTC") from None
    return value


# A timestamp input (the time zone, if any, kept as given).
Instant = Annotated[datetime, AfterValidator(in_utc_range)]


def _describe(char: str) -> str:
    code = ord(char)
    what = "NUL" if code == 0 else "an unpaired surrogate"
    return f"contains U+{code:04X} ({what}), which cannot be stored"


def find(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (a string, or JSON made of dicts, lists and scalars) cannot be stored,
    with where inside it (``['key'][3]: ...``); None when it can. Iterative, so a deep
    value costs no recursion; the path is only spelt out for the value that fails."""
    # (parent entry, key in the parent, item, depth): the path is built on failure only.
    stack: list[tuple[Any, Any, Any, int]] = [(None, None, value, 0)]
    while stack:
        entry = stack.pop()
        _, _, item, depth = entry
        if isinstance(item, str):
            if bad := _UNSTORABLE.search(item):
                return _at(entry, _describe(bad.group()))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return _at(entry, f"{item} is not a JSON number")
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return _at(entry, f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, inner in item.items():
                    if isinstance(key, str) and (bad := _UNSTORABLE.search(key)):
                        return _at((entry, key, key, 0), f"(a key) {_describe(bad.group())}")
                    stack.append((entry, key, inner, depth + 1))
            elif not _all_storable_strings(item) and not (
                depth + 1 < max_depth and _all_storable_rows(item)
            ):
                stack.extend((entry, i, inner, depth + 1) for i, inner in enumerate(item))
    return None


def _all_storable_strings(items: list | tuple) -> bool:
    """A list of strings only, none unstorable: one scan in C instead of one per item (a
    create message's thousand recipients)."""
    try:
        return not _UNSTORABLE.search("".join(items))
    except TypeError:  # not all strings: walk them one by one
        return False


def _all_storable_rows(items: list | tuple) -> bool:
    """A list of lists (or tuples) of strings only, none unstorable: one scan in C (a create
    message's thousand ``[id, recipient]`` items; walking them was ~0.8 µs per item)."""
    if not all(type(row) is list or type(row) is tuple for row in items):
        return False  # a dict would be joined by its keys alone: walk it
    try:
        return not _UNSTORABLE.search("".join(chain.from_iterable(items)))
    except TypeError:  # not all strings: walk them one by one
        return False


def _at(entry: tuple, problem: str) -> str:
    """``problem``, prefixed with the path of ``entry`` (``['data'][2]``) if it has one."""
    keys = []
    while entry[0] is not None:
        keys.append(_short(entry[1]))
        entry = entry[0]
    path = "".join(f"[{k}]" for k in reversed(keys))
    return f"{path}: {problem}" if path else problem


def _short(key: Any, limit: int = 40) -> str:
    text = repr(key)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def escape(text: str) -> str:
    """``text`` with what cannot be stored written as ``\\uXXXX``: for keeping a copy of,
    or a reason about, a request that could not be stored."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _is_model(annotation: Any) -> bool:
    """A model, or an optional one: it checks its own fields (and names them)."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    args = [a for a in get_args(annotation) if a is not type(None)]
    return bool(args) and all(isinstance(a, type) and issubclass(a, BaseModel) for a in args)


class StorableModel(BaseModel):
    """A request model whose every field must be storable (see the module docstring).

    The check runs before each field's own validation, on the raw input, so a value is
    refused before anything (a size check that serialises it, say) recurses into it; the
    error names the field, and the message where inside it. A field that is itself a
    model is left to that model, which names its own fields."""

    _nested: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._nested = frozenset(n for n, f in cls.model_fields.items() if _is_model(f.annotation))

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in cls._nested or isinstance(value, BaseModel):
            return value
        problem = find(value)
        if problem is not None:
            raise PydanticCustomError("unstorable", "{problem}", {"problem": problem})
        return value
