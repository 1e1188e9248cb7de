"""Run a function on many threads at once and collect what they raised."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


def run_concurrently(func: Callable[[Any], object], items: Iterable[Any]) -> list[BaseException]:
    errors: list[BaseException] = []

    def one(item):
        try:
            func(item)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors
