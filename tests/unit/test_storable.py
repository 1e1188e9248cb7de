"""The storable check itself (clarion.core.storable): what it refuses and where it says."""

from __future__ import annotations

import json

import pytest

from clarion.core import storable


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ok\u0000", "contains U+0000 (NUL)"),
        ({"a": [1, {"b": "x\ud800"}]}, "['a'][1]['b']: contains U+D800 (an unpaired surrogate)"),
        ({"k\u0000": 1}, "['k\\x00']: (a key) contains U+0000"),
        (["a", "b", "c\u0000"], "[2]: contains U+0000"),
        ([["id", "r"]] * 3 + [("id", "r\ud800")], "[3][1]: contains U+D800"),
        ([["id", "r"], [{"k": "v\u0000"}]], "[1][0]['k']: contains U+0000"),
        ([["id"], {"k": "v\u0000"}], "[1]['k']: contains U+0000"),
        ([["id"], [float("inf")]], "[1][0]: inf is not a JSON number"),
        (json.loads("[" * 32 + '["x"]' + "]" * 32), "nested deeper than 32 levels"),
        ({"n": float("nan")}, "['n']: nan is not a JSON number"),
        (json.loads("[" * 40 + "]" * 40), "nested deeper than 32 levels"),
    ],
)
def test_what_cannot_be_stored_is_found_with_where(value, problem):
    assert problem in storable.find(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ünïcødé 😀",
        {"a": [1, 2.5, None, True, {"b": "c"}]},
        ["x"] * 1000,
        2**80,
        [["0190-id", "recipient é"]] * 1000,
    ],
)
def test_what_can_be_stored_passes(value):
    assert storable.find(value) is None


def test_a_very_deep_value_is_refused_without_recursion():
    deep = current = []
    for _ in range(100_000):
        current.append([])
        current = current[0]
    assert "nested deeper" in storable.find(deep)


def test_escape_writes_what_cannot_be_stored_as_escapes():
    assert storable.escape("a\u0000b\ud800c") == "a\\u0000b\\ud800c"
