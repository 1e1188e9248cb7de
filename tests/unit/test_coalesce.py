"""The API's coalescer: concurrent requests share a publish; errors reach every request."""

from __future__ import annotations

import threading
import time

import pytest

from clarion.api.coalesce import Coalescer
from clarion.core import send
from clarion.core.schemas import NotificationCreate
from tests.threads import run_concurrently


def message(recipients: int = 1):
    return send.prepare(
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


def test_linger_gathers_requests_that_arrive_a_little_apart():
    batches: list[list] = []
    coalescer = Coalescer(batches.append, 500, linger=0.2)
    first = threading.Thread(target=coalescer.submit, args=(message(),))
    first.start()
    time.sleep(0.05)  # well inside the linger window, long after a publish would take
    coalescer.submit(message())
    first.join(2)

    assert [len(b) for b in batches] == [2]


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
