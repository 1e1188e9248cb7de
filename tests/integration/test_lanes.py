"""Priority and bulk lanes: which queue each kind of notification, and each of its
deliveries and retries, is published to (read back from the real Redis broker)."""

from __future__ import annotations

import pytest

from clarion.core import enqueue, queues
from clarion.core.schemas import NotificationCreate
from tests.broker import drain, queued
from tests.channels import FAST_RETRY
from tests.channels.smtp import give_email

PRIORITY, NORMAL, BULK = "priority", "normal", "bulk"


@pytest.fixture
def rt(make_runtime, smtp_server):
    runtime = make_runtime(**FAST_RETRY, **smtp_server.settings())
    give_email(runtime, "ada")
    return runtime


def notify(rt, **fields):
    values = {"category": "links", "title": "t", "channels": ["in_app", "email"], **fields}
    message = enqueue.prepare(NotificationCreate(**{"recipients": ["ada"], **values}))
    enqueue.enqueue(rt.celery, message)
    return message


def depths(rt, lane: str) -> tuple[int, int]:
    """(create queue, email deliver queue) depths of one lane."""
    return queued(rt.celery, queues.create_queue(lane)), queued(
        rt.celery, queues.deliver_queue("email", lane)
    )


@pytest.mark.parametrize(
    ("fields", "lane"),
    [
        ({"severity": "critical"}, PRIORITY),
        ({"severity": "high"}, PRIORITY),
        ({"severity": "medium"}, NORMAL),
        ({"severity": "low"}, NORMAL),
        ({"severity": "critical", "type": "digest"}, BULK),
    ],
)
def test_create_and_its_deliveries_run_on_the_lane_the_notification_calls_for(
    rt, smtp_server, fields, lane
):
    notify(rt, **fields)
    others = [other for other in (PRIORITY, NORMAL, BULK) if other != lane]
    assert depths(rt, lane) == (1, 0)
    assert all(depths(rt, other) == (0, 0) for other in others)

    drain(rt.celery, names=(queues.create_queue(lane),))
    assert depths(rt, lane) == (0, 1)
    assert all(depths(rt, other) == (0, 0) for other in others)

    drain(rt.celery)
    assert len(smtp_server.messages) == 1


def test_a_retry_stays_in_its_lane(rt, smtp_server):
    smtp_server.handler.replies = ["451 4.3.0 Try again later"]
    notify(rt, severity="critical")
    drain(rt.celery, limit=2)  # create, then the failed attempt
    assert depths(rt, PRIORITY) == (0, 1)  # the retry, with its countdown
    assert depths(rt, NORMAL) == (0, 0)
    drain(rt.celery)
    assert len(smtp_server.messages) == 1


def test_requests_published_together_split_by_lane(rt):
    critical = enqueue.prepare(
        NotificationCreate(recipients=["a"], category="x", title="now", severity="critical")
    )
    routine = enqueue.prepare(NotificationCreate(recipients=["b"], category="x", title="later"))
    enqueue.enqueue(rt.celery, critical, routine)  # as the API's coalescer does
    assert queued(rt.celery, queues.create_queue(PRIORITY)) == 1
    assert queued(rt.celery, queues.CREATE) == 1


def test_a_topic_send_delivers_on_the_bulk_lane_even_when_critical(rt, client, producer):
    client.put("/v1/topics/ops/subscribers", json={"add": ["ada"]}, headers=producer)
    sent = client.post(
        "/v1/notifications",
        json={
            "topic": "ops",
            "category": "system",
            "title": "maintenance",
            "severity": "critical",
            "channels": ["in_app", "email"],
        },
        headers=producer,
    )
    assert sent.status_code == 202
    drain(rt.celery, names=(queues.create_queue(BULK),))
    assert depths(rt, BULK) == (0, 1)
    assert depths(rt, PRIORITY) == depths(rt, NORMAL) == (0, 0)
