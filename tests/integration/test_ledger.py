"""The accepted-message ledger (clarion.core.ledger) on the real Redis broker.

A message the broker loses after a 202 (kombu's BRPOP → unacked window) is published again
by the sweeper and stored once; a stored message leaves no entry; a failed publish leaves
none either, so a refused request is never sent later.
"""

from __future__ import annotations

import time

import pytest
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import func, select

from clarion.core import enqueue, ledger, queues
from clarion.core.lanes import LANES
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Notification


def _message(n: int = 2):
    return enqueue.prepare(
        NotificationCreate(recipients=[f"u{i}" for i in range(n)], category="c", title="t")
    )


def _run_queued(app, queue: str = queues.CREATE) -> int:
    """Run each queued task as a worker would: with its message's task id."""
    ran = 0
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=False)
        while True:
            try:
                message = simple.get(block=False)
            except simple.Empty:
                break
            args, kwargs, _ = message.decode()
            task = app.tasks[message.headers["task"]]
            task.apply(args=args, kwargs=kwargs, task_id=message.headers["id"], throw=True)
            message.ack()
            ran += 1
        simple.close()
    return ran


def _stored(runtime) -> int:
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(Notification))


def _lose_queue(app, queue: str = queues.CREATE) -> int:
    """What kombu's loss window does: the message is gone from the queue, unacked nowhere."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        lost = client.llen(queue)
        client.delete(queue)
        return lost


def test_a_stored_message_leaves_no_entry(runtime):
    book = ledger.for_app(runtime.celery)
    enqueue.enqueue(runtime.celery, _message())
    [entry] = book.overdue(0, 10)
    assert entry.task == enqueue.CREATE_TASK and entry.queue == queues.CREATE

    assert _run_queued(runtime.celery) == 1
    assert _stored(runtime) == 2
    assert book.overdue(0, 10) == []


def test_a_message_lost_by_the_broker_is_sent_again_and_stored_once(make_runtime):
    rt = make_runtime(ledger_resend_seconds=0.2)
    m = _message(3)
    enqueue.enqueue(rt.celery, m)
    assert _lose_queue(rt.celery) == 1

    sweep = rt.celery.tasks["clarion.sweep"]
    assert sweep.apply(throw=True).get()["ledger_resent"] == 0  # not overdue yet
    time.sleep(0.3)
    assert sweep.apply(throw=True).get()["ledger_resent"] == 1
    # The original was only slow after all: both copies run, one set of rows.
    enqueue.enqueue(rt.celery, m)
    assert _run_queued(rt.celery) == 2
    assert _stored(rt) == 3
    time.sleep(0.3)
    assert sweep.apply(throw=True).get()["ledger_resent"] == 0


def test_a_lost_fanout_is_sent_again(make_runtime, client, producer):
    rt = make_runtime(ledger_resend_seconds=0.2)
    client.put("/v1/topics/news/subscribers", json={"add": ["a", "b"]}, headers=producer)
    r = client.post(
        "/v1/notifications", json={"topic": "news", "category": "c", "title": "t"}, headers=producer
    )
    assert r.status_code == 202
    assert _lose_queue(rt.celery, queues.create_queue("bulk")) == 1
    time.sleep(0.3)
    assert rt.celery.tasks["clarion.sweep"].apply(throw=True).get()["ledger_resent"] == 1
    _run_queued(rt.celery, queues.create_queue("bulk"))  # the fan-out, then its batch
    _run_queued(rt.celery, queues.create_queue("bulk"))
    assert _stored(rt) == 2
    assert ledger.for_app(rt.celery).overdue(0, 10) == []


def test_a_failed_publish_leaves_no_entry(runtime, monkeypatch):
    def refuse(*args, **kwargs):
        raise BrokerError("broker down")

    monkeypatch.setattr(runtime.celery, "send_task", refuse)
    with pytest.raises(BrokerError):
        enqueue.enqueue(runtime.celery, _message())
    assert ledger.for_app(runtime.celery).overdue(0, 10) == []


def test_an_entry_that_never_settles_is_dropped_after_the_last_resend(make_runtime):
    rt = make_runtime(ledger_resend_seconds=0.05, ledger_max_resends=2)
    enqueue.enqueue(rt.celery, _message())
    sweep = rt.celery.tasks["clarion.sweep"]
    counts = []
    for _ in range(3):
        _lose_queue(rt.celery)  # the task never gets to run
        time.sleep(0.1)
        result = sweep.apply(throw=True).get()
        counts.append((result["ledger_resent"], result["ledger_dropped"]))
    assert counts == [(1, 0), (1, 0), (0, 1)]
    assert ledger.for_app(rt.celery).overdue(0, 10) == []


def test_the_embedded_broker_has_no_ledger():
    assert isinstance(ledger.for_broker("sqla+sqlite:///x.db"), ledger.NullLedger)
    assert isinstance(ledger.for_broker("amqp://guest@localhost//"), ledger.NullLedger)
    assert isinstance(ledger.for_broker("redis://127.0.0.1:6379/3"), ledger.RedisLedger)


QS = [queues.create_queue(lane) for lane in LANES]


def test_a_message_lost_at_a_kill_is_sent_again_at_once_but_not_one_waiting_or_held(runtime):
    """What beat's sweep does every few seconds (``ledger_lost_seconds``, here 0.2 s): a
    message nowhere in the broker comes back long before the 300 s backstop, while one a
    worker holds (unacked) and one still waiting in the queue are left alone."""
    app, book = runtime.celery, ledger.for_app(runtime.celery)
    held, lost, waiting = _message(), _message(), _message()
    for m in (held, lost, waiting):
        enqueue.enqueue(app, m)
    entries = {e.args[0]["request_id"]: e.task_id for e in book.overdue(0, 10)}
    with app.connection_for_write() as conn:
        worker = conn.SimpleQueue(queues.CREATE, no_ack=False)
        taken = worker.get(block=False)  # the oldest: held, unacked, not yet acknowledged
        assert taken.headers["id"] == entries[str(held.request_id)]
        # The next one: taken off the queue by a worker killed before it recorded it.
        conn.default_channel.client.rpop(queues.CREATE)
        time.sleep(0.3)
        again = ledger.resend_lost(app, book, older_than=0.2, max_resends=5, limit=100, queues=QS)
        assert again == {"resent": 1, "dropped": 0}
        assert ledger.resend_lost(
            app, book, older_than=0.2, max_resends=5, limit=100, queues=QS
        ) == {
            "resent": 0,
            "dropped": 0,
        }  # its clock restarted; the held and the waiting one are still not lost
        worker.close()  # the held one goes back to its queue
    assert _run_queued(app) == 3
    assert _stored(runtime) == 6
    assert book.overdue(0, 10) == []


def test_a_create_message_keeps_the_content_out_of_its_headers(runtime):
    # Celery's argsrepr header is what worker logs, task events and Flower show of a task:
    # a count of requests, not the recipients, titles and bodies.
    message = enqueue.prepare(
        NotificationCreate(recipients=["secret-user"], category="c", title="secret title")
    )
    enqueue.enqueue(runtime.celery, message, message)
    with runtime.celery.connection_for_read() as conn:
        simple = conn.SimpleQueue(queues.CREATE, no_ack=False)
        received = simple.get(block=False)
        args, _, _ = received.decode()
        received.ack()
        simple.close()
    assert [a["request_id"] for a in args] == [str(message.request_id)] * 2
    assert received.headers["argsrepr"] == "(<2 requests>)"
    assert "secret" not in repr(received.headers)
