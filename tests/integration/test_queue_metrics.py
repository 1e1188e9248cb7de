"""Queue depth and oldest-message age, read from the real Redis broker at scrape time."""

from __future__ import annotations

import json
import time

from celery import Celery

from clarion.core import queues
from clarion.workers.app import celery_config
from clarion.workers.queue_metrics import HEADER, QueueCollector
from tests.conftest import server_settings


def scrape(app) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("queue", "")): s.value
        for family in QueueCollector(app).collect()
        for s in family.samples
    }


def test_depth_and_age_of_waiting_messages_every_priority_list_included(runtime, redis_client):
    app = runtime.celery
    app.send_task("clarion.rules.run", args=["x", "manual", None], queue=queues.ENGINE)
    time.sleep(1.1)
    app.send_task("clarion.rules.run", args=["y", "manual", None], queue=queues.ENGINE)
    app.send_task("clarion.sweep", queue=queues.PERIODIC, priority=9)  # its own Redis list
    assert redis_client.llen(queues.PERIODIC) == 0  # not in the queue's first list
    got = scrape(app)
    assert got[("clarion_broker_up", "")] == 1
    assert got[("clarion_queue_messages", queues.ENGINE)] == 2
    assert got[("clarion_queue_messages", queues.PERIODIC)] == 1
    assert got[("clarion_queue_messages", queues.CREATE)] == 0
    # The oldest of the two, not the newest.
    assert 1.0 <= got[("clarion_queue_oldest_message_age_seconds", queues.ENGINE)] < 30
    assert 0 <= got[("clarion_queue_oldest_message_age_seconds", queues.PERIODIC)] < 1.0
    assert got[("clarion_queue_oldest_message_age_seconds", queues.CREATE)] == 0
    assert got[("clarion_broker_unacked_messages", "")] == 0
    tail = json.loads(redis_client.lindex(queues.ENGINE, -1))
    assert isinstance(tail["headers"][HEADER], float)


def test_a_message_without_the_stamp_has_no_age_rather_than_a_wrong_one(runtime, redis_client):
    redis_client.lpush(queues.ENGINE, json.dumps({"body": "", "headers": {}, "properties": {}}))
    got = scrape(runtime.celery)
    assert got[("clarion_queue_messages", queues.ENGINE)] == 1
    assert ("clarion_queue_oldest_message_age_seconds", queues.ENGINE) not in got
    assert got[("clarion_queue_oldest_message_age_seconds", queues.CREATE)] == 0


def test_an_unreachable_broker_is_reported_not_raised(pg_url):
    settings = server_settings(pg_url, broker_url="redis://127.0.0.1:1/0")
    app = Celery("down", set_as_current=False)
    app.config_from_object(celery_config(settings))
    assert scrape(app) == {("clarion_broker_up", ""): 0}
