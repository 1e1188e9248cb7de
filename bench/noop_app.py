"""The pipeline benchmark's baseline: a Celery app with one no-op task, configured like Clarion's.

The configuration is Clarion's own ``celery_config(Settings())`` (same broker, JSON,
acks_late, reject on worker lost, prefetch multiplier, task events), with only the queue
changed to ``bench.noop``. Run a worker with::

    python -m celery -A bench.noop_app worker -Q bench.noop --pool prefork --concurrency 2

Completion signal: each task does one Redis ``INCR`` on the pub/sub database (one round
trip, ~0.05 ms, against ~1 ms per task); the task that sees 1 stores the time, the task that
sees ``total`` stores the time, so the rate excludes worker start-up.
"""

from __future__ import annotations

import time

import redis
from celery import Celery
from kombu import Queue

from clarion.settings import Settings
from clarion.workers.app import celery_config

QUEUE = "bench.noop"
COUNTER = "bench:noop:done"
FIRST = "bench:noop:first"
LAST = "bench:noop:last"

settings = Settings()
app = Celery("bench_noop", set_as_current=False)
config = celery_config(settings)
config.update(task_queues=[Queue(QUEUE)], task_default_queue=QUEUE)
app.config_from_object(config)

_client: redis.Redis | None = None  # one per prefork child, made after the fork


@app.task(name="bench.noop")
def noop(total: int) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url)
    done = _client.incr(COUNTER)
    if done == 1:
        _client.set(FIRST, repr(time.time()))
    if done == total:
        _client.set(LAST, repr(time.time()))
