"""Coalesce concurrent send requests into one ``create`` task.

While one publish is in flight, the requests that arrive meanwhile queue up and go out
together as the next task, so under load one task and one transaction serve many small
requests. With ``linger`` (CLARION_API_COALESCE_LINGER_MS, default 2) the coalescer also
waits that long for company before publishing: bigger batches at a lower request rate,
for that much added latency. Each request still waits for
the publish that carries it: a 202 always means "in the broker", and a broker error fails
every request of that batch (each answers 503, nothing half-accepted).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from clarion.core.schemas import CreateMessage

Publish = Callable[[list[CreateMessage]], None]


class Coalescer:
    def __init__(self, publish: Publish, max_notifications: int, linger: float = 0.0) -> None:
        self._publish = publish
        self._max = max_notifications
        self._linger = linger
        self._queue: queue.SimpleQueue[tuple[CreateMessage, Future]] = queue.SimpleQueue()
        self._carry: tuple[CreateMessage, Future] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, message: CreateMessage) -> None:
        """Block until the message is in the broker; re-raise the broker's error if not."""
        if self._max <= 1:
            self._publish([message])
            return
        done: Future = Future()
        self._queue.put((message, done))
        self._start()
        done.result()

    def _start(self) -> None:
        # Started on first use, so each (forked) API worker process gets its own thread.
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="clarion-coalescer", daemon=True
                    )
                    self._thread.start()

    def _next_batch(self) -> list[tuple[CreateMessage, Future]]:
        first, self._carry = self._carry or self._queue.get(), None
        batch, size = [first], len(first[0].items)
        deadline = time.monotonic() + self._linger
        while size < self._max:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if size + len(item[0].items) > self._max:
                self._carry = item
                break
            batch.append(item)
            size += len(item[0].items)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._publish([message for message, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)
