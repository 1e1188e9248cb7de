"""Work that many connections ask for at about the same time, done once for all of them.

After a restart every client comes back within a second or two, and each needs the same
things: its connect counted against the rate limit, its recipient's head, unread counts
and replay. Asked one connection at a time, each was a hop to the thread pool with a
round trip of its own (four statements for the start), and the herd queued behind the
thread pool (docs/benchmarks/stream.md, "Reconnect storm"). A :class:`Batcher` collects
the items asked while a batch is in flight (and for ``linger`` before the first), then
one thread does a whole batch: a lone connection waits ``linger`` at most, and a herd
gets batches as large as the round trips let them grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """``get(item)``: a future of ``work(items)[i]``, run in a thread with the other items
    asked about now. ``work`` returns one result per item, in order; an exception among
    them is raised to that item's caller only."""

    def __init__(
        self,
        work: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        linger: float = 0.001,
        size: int = 1000,
        in_flight: int = 1,
    ) -> None:
        self.work, self.linger, self.size, self.in_flight = work, linger, size, in_flight
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Result]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, item: Item) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (an app served again, in tests): start afresh
            self._loop, self._items, self._futures = loop, [], []
            self._timer, self._running = None, set()
        future = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self.size:
            self._flush()
        elif self._timer is None and len(self._running) < self.in_flight:
            self._timer = loop.call_later(self.linger, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._items or len(self._running) >= self.in_flight:
            return  # the next batch goes when one in flight is done
        items, futures = self._items[: self.size], self._futures[: self.size]
        del self._items[: self.size], self._futures[: self.size]
        task = asyncio.get_running_loop().create_task(self._run(items, futures))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if self._items and self._timer is None:
            self._flush()

    async def _run(self, items: list[Item], futures: list[asyncio.Future[Result]]) -> None:
        try:
            results = await asyncio.to_thread(self.work, items)
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            results = [exc] * len(items)
        answer(zip(futures, results, strict=True))


def answer(answers: Iterable[tuple[asyncio.Future, object]]) -> None:
    """Settle each waiting future with its result, or raise its exception in the waiter;
    a future already cancelled (its client left) is passed over. On the loop's thread."""
    for future, result in answers:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
