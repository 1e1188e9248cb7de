"""The API's coalescer: concurrent requests share a publish; errors reach every request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from clarion.api.coalesce import Coalescer
from clarion.core import enqueue
from clarion.core.schemas import NotificationCreate
from tests.threads import run_concurrently


def message(recipients: int = 1):
    return enqueue.prepare(
        NotificationCreate(recipients=[f"u{i}" for i in range(recipients)], category="x", title="t")
    )


def submit_concurrently(coalescer: Coalescer, messages) -> list[BaseException]:
    return run_concurrently(coalescer.submit, messages)


def test_concurrent_requests_share_publishes_and_each_is_published_once():
    batches: list[list] = []

    def slow_publish(messages):
        time.sleep(0.01)  # a broker round trip
        batches.append(messages)

    messages = [message() for _ in range(40)]
    assert submit_concurrently(Coalescer(slow_publish, 500), messages) == []

    published = [m.request_id for batch in batches for m in batch]
    assert sorted(published) == sorted(m.request_id for m in messages)
    assert len(batches) < len(messages)


def test_a_lone_request_is_published_at_once_not_after_the_linger():
    published: list[float] = []
    coalescer = Coalescer(lambda ms: published.append(time.monotonic()), 500, linger=0.5)
    start = time.monotonic()
    coalescer.submit(message())
    time.sleep(0.6)  # longer than the linger: the next one comes alone too
    second = time.monotonic()
    coalescer.submit(message())

    assert published[0] - start < 0.1 and published[1] - second < 0.1


def paced(coalescer: Coalescer, count: int, gap: float) -> dict[int, float]:
    """Submit ``count`` requests ``gap`` s apart, each on its own thread, as paced clients
    do; returns each one's wait for its 202."""
    waits: dict[int, float] = {}

    def one(k: int) -> None:
        start = time.monotonic()
        coalescer.submit(message())
        waits[k] = time.monotonic() - start

    threads = []
    for k in range(count):
        threads.append(threading.Thread(target=one, args=(k,)))
        threads[-1].start()
        time.sleep(gap)
    for thread in threads:
        thread.join(5)
    return waits


def test_a_steady_stream_is_batched_and_no_request_waits_past_the_linger():
    batches: list[list] = []
    linger = 0.2
    waits = paced(Coalescer(batches.append, 500, linger=linger), 12, 0.05)

    assert sum(len(b) for b in batches) == 12
    # Requests 50 ms apart under a 200 ms bound: after the first (alone), two or three per
    # task.
    assert len(batches) <= 8 and max(len(b) for b in batches) >= 2
    assert max(waits.values()) < linger + 0.1


def test_a_fast_stream_waits_about_two_gaps_not_the_bound():
    batches: list[list] = []
    waits = paced(Coalescer(batches.append, 500, linger=1.0), 30, 0.02)

    assert sum(len(b) for b in batches) == 30 and len(batches) <= 20
    # A fixed linger would hold the first request of every batch for the whole second.
    assert max(waits.values()) < 0.4


def test_requests_further_apart_than_the_linger_are_not_delayed():
    batches: list[list] = []
    waits = paced(Coalescer(batches.append, 500, linger=0.05), 4, 0.15)

    assert [len(b) for b in batches] == [1, 1, 1, 1]
    assert max(waits.values()) < 0.04


def test_a_burst_is_one_task_and_does_not_wait_out_the_linger():
    batches: list[list] = []
    release = threading.Event()

    def publish(messages):
        release.wait(5)  # the first publish is in flight while the burst arrives
        batches.append(messages)

    coalescer = Coalescer(publish, 500, linger=2.0)
    first = threading.Thread(target=coalescer.submit, args=(message(),))
    first.start()
    time.sleep(0.05)
    burst = [threading.Thread(target=coalescer.submit, args=(message(),)) for _ in range(20)]
    for thread in burst:
        thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    release.set()
    for thread in [first, *burst]:
        thread.join(5)

    assert [len(b) for b in batches] == [1, 20]
    assert time.monotonic() - start < 1.0  # far inside the 2 s bound


def test_a_batch_never_exceeds_the_notification_cap():
    batches: list[list] = []

    def publish(messages):
        time.sleep(0.005)
        batches.append(messages)

    messages = [message(recipients=30) for _ in range(20)]
    assert submit_concurrently(Coalescer(publish, 100), messages) == []
    assert all(sum(len(m.items) for m in b) <= 100 for b in batches)
    assert sum(len(b) for b in batches) == 20


def test_a_broker_error_fails_every_request_in_the_batch():
    def down(messages):
        time.sleep(0.005)
        raise ConnectionError("broker down")

    errors = submit_concurrently(Coalescer(down, 500), [message() for _ in range(10)])
    assert len(errors) == 10 and all(isinstance(e, ConnectionError) for e in errors)


def test_cap_of_one_publishes_each_request_on_the_callers_thread():
    callers = []
    Coalescer(lambda ms: callers.append(threading.current_thread()), 1).submit(message())
    assert callers == [threading.current_thread()]
    with pytest.raises(ZeroDivisionError):
        Coalescer(lambda ms: 1 / 0, 1).submit(message())


def test_sends_awaited_on_one_event_loop_are_counted_then_published_together():
    published: list = []
    counted: list[int] = []

    def count(groups):
        counted.append(len(groups))
        return [ValueError("over the limit") if c[0] == "no" else ["ok"] for c in groups]

    def slow_publish(messages):
        time.sleep(0.01)  # a broker round trip
        published.extend(messages)

    coalescer = Coalescer(slow_publish, 500, count=count)
    messages = [message() for _ in range(30)]

    async def all_sends():
        checks = [("no",) if i == 7 else ("yes",) for i in range(30)]
        sends = (coalescer.send(m, c) for m, c in zip(messages, checks, strict=True))
        return await asyncio.gather(*sends, return_exceptions=True)

    outcomes = asyncio.run(all_sends())

    assert isinstance(outcomes[7], ValueError)
    assert [o for i, o in enumerate(outcomes) if i != 7] == [["ok"]] * 29
    assert {m.request_id for m in published} == {
        m.request_id for i, m in enumerate(messages) if i != 7
    }
    assert sum(counted) == 30 and len(counted) < 30  # counted in batches, not one by one
