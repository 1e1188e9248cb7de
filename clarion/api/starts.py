"""The reads a live connection starts with, batched across connections arriving together.

After a restart every client comes back within a second or two, and each needs its
recipient's head, unread counts and replay. Asked one connection at a time, that was a
thread hop, a session and four statements each, and the herd queued behind the thread
pool (docs/benchmarks/stream.md, "Reconnect storm"). Here the asks collect while a batch
is being read (and for ``linger`` before the first), then one thread reads a whole batch
in one session with one statement per question (:func:`clarion.core.stream.starts`).
A lone connection waits ``linger`` at most; a herd gets batches as large as the
database round trips let them grow.
"""

from __future__ import annotations

import asyncio
import logging

from clarion.core import stream
from clarion.core.stream import Start
from clarion.runtime import Runtime

log = logging.getLogger(__name__)
Ask = tuple[str, int | None]  # (recipient, the cursor to replay after, if any)


class Starts:
    def __init__(
        self, runtime: Runtime, linger: float = 0.001, size: int = 1000, in_flight: int = 2
    ) -> None:
        self.runtime = runtime
        self.linger, self.size, self.in_flight = linger, size, in_flight
        self._asks: dict[Ask, list[asyncio.Future[Start]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()

    def get(self, recipient: str, since: int | None) -> asyncio.Future[Start]:
        """The start of a connection of ``recipient`` resuming after ``since`` (None: a
        fresh one), read with the other connections starting about now."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._asks.setdefault((recipient, since), []).append(future)
        if len(self._asks) >= self.size:
            self._flush()
        elif self._timer is None and len(self._running) < self.in_flight:
            self._timer = loop.call_later(self.linger, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._asks or len(self._running) >= self.in_flight:
            return  # the next batch goes when one in flight is done
        asks, self._asks = self._asks, {}
        task = asyncio.get_running_loop().create_task(self._read(asks))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if self._asks and self._timer is None:
            self._flush()

    async def _read(self, asks: dict[Ask, list[asyncio.Future[Start]]]) -> None:
        try:
            found = await asyncio.to_thread(_read, self.runtime, list(asks))
        except Exception as exc:  # noqa: BLE001 - each connection reports it and closes
            for futures in asks.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for ask, futures in asks.items():
            for future in futures:
                if not future.done():  # done: cancelled, the client left
                    future.set_result(found[ask])


def _read(runtime: Runtime, asks: list[Ask]) -> dict[Ask, Start]:
    with runtime.sessions() as session:
        return stream.starts(session=session, asks=asks, limit=runtime.settings.stream_max_replay)
