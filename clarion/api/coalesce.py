"""Coalesce concurrent send requests into one ``create`` task.

While one publish is in flight, the requests that arrive meanwhile queue up and go out
together as the next task, so under load one task and one transaction serve many small
requests. Each request still waits for the publish that carries it: a 202 always means
"in the broker", and a broker error fails every request of that batch (each answers 503,
nothing half-accepted).

The linger is adaptive. A steady stream of requests a few milliseconds apart (200 paced
POST/s are 5 ms apart) never overlaps a publish, so without waiting each request would be
its own task, and the worker would pay a task and a transaction per notification. So the
coalescer keeps a moving average of the gap between arrivals, and after a batch's first
request it waits for the next one only while that one is expected before the batch's
deadline, never later than the bound (``linger``, CLARION_API_COALESCE_LINGER_MS):

- a request that comes alone (nothing arrived within ``linger`` before it) is published
  at once, so a quiet API adds no delay;
- in a steady stream, a batch waits for about four more requests (four average gaps), at
  most ``linger``, and closes early when the next one is not expected in time: 200 paced
  requests/s (5 ms apart) wait up to 20 ms, 1,000/s up to 4 ms;
- a burst (many clients at once) is drained as it comes, and its batch closes 2 ms after
  it started (or four average gaps after its first request, if later), not at the bound.

The deadline follows the average as it moves, so the first batches of a new stream do not
wait out the bound while the rate is still being learnt.

A request may bring the rate-limit checks it must pass (its key's rate and daily quota):
the batch counts them all in one round trip to the store before the publish, and a
request refused there is not published (its caller gets the 429 or 503). The event loop
awaits :meth:`Coalescer.send` without a thread of its own: the batch is answered with one
wake-up of the loop, where a thread per request waiting on :meth:`Coalescer.submit` cost
a hop to the pool and back for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import NamedTuple, cast

from clarion import logs, telemetry
from clarion.api.batch import answer
from clarion.core.ratelimits import Check, Standing
from clarion.core.schemas import CreateMessage

Publish = Callable[[list[CreateMessage]], None]
# Counts each request's checks (all or nothing per request): where its limits stand, or
# the exception to answer with (a 429 or 503 problem).
Count = Callable[[list[tuple[Check, ...]]], list["list[Standing] | BaseException"]]
Outcome = list[Standing] | BaseException

# Weight of the newest gap in the moving average: a few requests make a new rate known.
GAP_WEIGHT = 0.5
# A batch waits for about this many more requests after its first (never past the bound):
# a fast stream batches in a short wait, so a closed loop of a few clients keeps its pace.
WAIT_FOR = 4
# ... and at least this long after it started (the fixed linger of old, which made the
# closed-loop maximum), unless its first request came alone.
FLOOR = 0.002


class _Pending(NamedTuple):
    message: CreateMessage
    checks: tuple[Check, ...]
    done: Future | asyncio.Future  # asyncio's when ``loop`` is set
    loop: asyncio.AbstractEventLoop | None
    arrived: float  # time.monotonic() when the request was submitted
    request_id: str | None = None  # its X-Request-ID, carried to the worker's log lines
    trace: object = None  # its trace context (clarion.telemetry), when tracing is on


class Coalescer:
    def __init__(
        self,
        publish: Publish,
        max_notifications: int,
        linger: float = 0.0,
        count: Count | None = None,
    ) -> None:
        self._publish, self._count = publish, count
        self._max = max_notifications
        self._linger = linger
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._carry: _Pending | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Arrival bookkeeping, touched by the coalescer thread only.
        self._last_arrival = float("-inf")
        self._gap = float("inf")

    def submit(self, message: CreateMessage, checks: tuple[Check, ...] = ()) -> list[Standing]:
        """Block until the message is in the broker (where its checks stand), or raise why
        not: the broker's error, or the refusal of a check (then it was not published)."""
        if self._max <= 1:
            return _raise_or_return(self._send([message], [checks])[0])
        done: Future = Future()
        self._put(message, checks, done, None)
        return done.result()

    async def send(self, message: CreateMessage, checks: tuple[Check, ...] = ()) -> list[Standing]:
        """:meth:`submit` for the event loop, without holding a thread while it waits."""
        if self._max <= 1:  # published on the caller's thread: not the loop's
            return await asyncio.to_thread(self.submit, message, checks)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._put(message, checks, done, loop)
        return await done

    def _put(self, message, checks, done, loop) -> None:
        request_id = logs.context().get("request_id")
        trace = telemetry.capture()
        self._queue.put(_Pending(message, checks, done, loop, time.monotonic(), request_id, trace))
        self._start()

    def _start(self) -> None:
        # Started on first use, so each (forked) API worker process gets its own thread.
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="clarion-coalescer", daemon=True
                    )
                    self._thread.start()

    def _arrived(self, item: _Pending) -> float:
        """Fold the item's gap to the previous arrival into the average; return the gap."""
        gap = max(0.0, item.arrived - self._last_arrival)
        self._last_arrival = max(self._last_arrival, item.arrived)
        # A silence longer than the bound counts as the bound: enough to stop lingering,
        # and a new stream's rate is known after a few requests.
        sample = min(gap, self._linger)
        if self._gap == float("inf"):
            self._gap = sample
        else:
            self._gap += GAP_WEIGHT * (sample - self._gap)
        return gap

    def _wait_for_next(self, first: _Pending, started: float) -> float | None:
        """How long to wait for the next request (None: take only what is queued already).

        The batch lasts about WAIT_FOR gaps at the current rate after its first request
        arrived, never past the bound, and no longer than the next request is expected to
        take; but at least FLOOR after the batch started, which matters in a closed loop:
        there the first request has often waited out a publish already, and without the
        floor the batches, and so the rate, would shrink."""
        now = time.monotonic()
        adaptive = first.arrived + min(self._linger, WAIT_FOR * self._gap) - now
        if adaptive < self._gap:  # the next one is not expected in time
            adaptive = 0.0
        wait = max(adaptive, started + min(self._linger, FLOOR) - now)
        return wait if wait > 0 else None

    def _next_batch(self) -> list[_Pending]:
        if self._carry is not None:  # counted when it arrived; it came with company
            first, self._carry, alone = self._carry, None, False
        else:
            first = self._queue.get()
            alone = self._arrived(first) > self._linger
        batch, size, started = [first], len(first.message.items), time.monotonic()
        while size < self._max:
            timeout = None if alone else self._wait_for_next(first, started)
            try:
                item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue.Empty:
                break
            self._arrived(item)
            if size + len(item.message.items) > self._max:
                self._carry = item
                break
            batch.append(item)
            size += len(item.message.items)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                traces = [p.trace for p in batch]
                with _request_ids(batch), telemetry.coalesced(traces, len(batch)):
                    outcomes = self._send([p.message for p in batch], [p.checks for p in batch])
            except BaseException as exc:  # noqa: BLE001 - the log or trace context failed
                outcomes = [exc] * len(batch)
            _settle(batch, outcomes)

    def _send(self, messages: list[CreateMessage], checks: list[tuple[Check, ...]]) -> list:
        """Count the checks, then publish the messages that passed: each one's outcome."""
        outcomes: list[Outcome] = [[] for _ in messages]
        try:
            counted = [i for i, c in enumerate(checks) if c]
            if counted:
                if self._count is None:
                    raise TypeError("this coalescer counts no rate limits")
                hits = self._count([checks[i] for i in counted])
                for i, outcome in zip(counted, hits, strict=True):
                    outcomes[i] = outcome
            passed = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
            if passed:
                self._publish([messages[i] for i in passed])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            return [o if isinstance(o, BaseException) else exc for o in outcomes]
        return outcomes


def _raise_or_return(outcome: Outcome) -> list[Standing]:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _settle(batch: list[_Pending], outcomes: list[Outcome]) -> None:
    """Answer each waiting request: a thread's future at once, and the event loop's all
    in one call (one wake-up of the loop per batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Outcome]]] = {}
    for pending, outcome in zip(batch, outcomes, strict=True):
        if pending.loop is not None:
            by_loop.setdefault(pending.loop, []).append(
                (cast(asyncio.Future, pending.done), outcome)
            )
        elif isinstance(outcome, BaseException):
            pending.done.set_exception(outcome)
        else:
            pending.done.set_result(outcome)
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(answer, answers)


@contextlib.contextmanager
def _request_ids(batch: list[_Pending]):
    """The batch's X-Request-IDs, in the log context of the publish (which puts them in the
    task message), by send request; and as the request id when there is just one."""
    mapping = {str(p.message.request_id): p.request_id for p in batch if p.request_id}
    single = set(mapping.values())
    token = logs.carry(mapping)
    try:
        with logs.bound(request_id=single.pop() if len(single) == 1 else None):
            yield
    finally:
        logs.uncarry(token)
