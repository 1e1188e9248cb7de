"""Run a ``clarion`` command with timing probes, for bench/ui_profile.py (not the platform).

    python -m bench._probe OUT.jsonl api --port 8000

Appends JSON lines to OUT, each with the wall clock in ms and the process id:

- ``gc``: every garbage collection that took over 1 ms (generation, duration);
- ``lag``: the API's event loop late by over 5 ms for a 2 ms sleep (how late);
- ``hub``: the live hub took a pub/sub message (the titles of its events).
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import time

OUT = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115 - open for the process's life
TITLE = re.compile(r'"title":"([^"]+)"')
MAIN = os.getpid()


def write(kind: str, **fields) -> None:
    role = sys.argv[2] if os.getpid() == MAIN else f"{sys.argv[2]} child"
    OUT.write(json.dumps({"kind": kind, "pid": os.getpid(), "role": role, **fields}) + "\n")


_gc_started = [0.0]


def _gc(phase: str, info: dict) -> None:
    now = time.perf_counter()
    if phase == "start":
        _gc_started[0] = now
        return
    took = (now - _gc_started[0]) * 1000
    if took > 1:
        write("gc", at=time.time() * 1000, ms=took, gen=info["generation"])


gc.callbacks.append(_gc)


def _probe_hub() -> None:
    import asyncio

    from clarion.api import live_hub

    dispatch, start = live_hub.Hub.dispatch, live_hub.Hub.start

    def traced_dispatch(self, message: str) -> None:
        at = time.time() * 1000
        dispatch(self, message)
        write("hub", at=at, done=time.time() * 1000, titles=TITLE.findall(message))

    async def lag() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.002)
            late = (time.perf_counter() - t0 - 0.002) * 1000
            if late > 5:
                write("lag", at=time.time() * 1000, ms=late)

    def traced_start(self) -> None:
        start(self)
        self._tasks.append(asyncio.get_running_loop().create_task(lag()))

    live_hub.Hub.dispatch, live_hub.Hub.start = traced_dispatch, traced_start


if __name__ == "__main__":
    if sys.argv[2] == "api":
        _probe_hub()
    from clarion.cli import main

    main(sys.argv[2:])
