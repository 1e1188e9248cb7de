"""A worker survives a restart of Redis (its broker) under load: it reconnects, goes on
storing notifications, and every notification accepted before, during and after the
restart is stored exactly once (clarion.workers.redisbroker; docs/operations/runbook.md).

Before the fix, the worker stopped with ``Unrecoverable error: AttributeError("'NoneType'
object has no attribute 'hostname'")`` when Redis went away while it held messages."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from clarion.api.app import create_app
from clarion.db.models import Notification
from tests.conftest import make_key, process_env
from tests.e2e.procs import Proc, wait_for
from tests.redisproc import RedisServer

pytestmark = pytest.mark.e2e
RESTARTS = 3


def stored(runtime) -> Counter[str]:
    """How many notifications each recipient has."""
    query = select(Notification.recipient_id, func.count()).group_by(Notification.recipient_id)
    with runtime.sessions() as session:
        return Counter(dict(session.execute(query).all()))


def test_a_worker_survives_a_redis_restart_and_nothing_accepted_is_lost(
    make_runtime, runtime, tmp_path
):
    broker = RedisServer(tmp_path)
    broker.start()
    urls = {"broker_url": f"{broker.url}/0", "redis_url": f"{broker.url}/1"}
    env = process_env(
        runtime.settings.database_url,
        CLARION_BROKER_URL=urls["broker_url"],
        CLARION_REDIS_URL=urls["redis_url"],
        CLARION_LOG_LEVEL="WARNING",
        # What the old connection held comes back after this (a dead holder's messages).
        CLARION_BROKER_VISIBILITY_TIMEOUT="4",
        CLARION_WORKER_HEARTBEAT_SECONDS="1",
        # A message Redis popped for the worker but never answered it with, as it shut
        # down, is in no queue and held by nobody: the ledger's sweep publishes it again.
        CLARION_LEDGER_LOST_SECONDS="3",
        CLARION_SWEEPER_INTERVAL_SECONDS="1",
    )
    worker = Proc(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
    beat = Proc(["beat", "--schedule", str(tmp_path / "beat-schedule")], env, tmp_path / "beat.log")
    key = {"Authorization": f"Bearer {make_key(runtime, 'notify')}"}
    # One message per send (no coalescing), so that the worker holds several at the stop.
    rt = make_runtime(**urls, api_coalesce_max_notifications=1)
    api = TestClient(create_app(runtime=rt), raise_server_exceptions=False)
    counts: Counter[int] = Counter()
    accepted: list[str] = []  # one recipient per send
    sending = threading.Event()

    def load() -> None:  # a steady producer, as in bench/chaos.py
        i = 0
        while sending.is_set():
            body = {"recipients": [f"u{i}"], "category": "news", "title": "hi"}
            code = api.post("/v1/notifications", json=body, headers=key).status_code
            counts[code] += 1
            if code == 202:
                accepted.append(f"u{i}")
            i += 1
            time.sleep(0.03)

    def all_stored() -> bool:
        have = stored(runtime)
        return all(have[r] for r in accepted)

    try:
        with api:
            sending.set()
            producer = threading.Thread(target=load)
            producer.start()
            wait_for(lambda: len(stored(runtime)) >= 20, 20, "the worker to store", worker)
            for _ in range(RESTARTS):  # each one a chance to catch the worker holding messages
                broker.stop()
                time.sleep(1)
                broker.start()
                before = len(accepted)
                time.sleep(2)
            sending.clear()
            producer.join(10)
            wait_for(all_stored, 25, "every accepted send stored", worker)
            time.sleep(1)
        assert set(counts) <= {202, 503}, counts  # 503 while Redis is down, never a 500
        assert len(accepted) > before  # sends after the restart were accepted (and stored)
        assert worker.popen.poll() is None, worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output()
        # Each accepted send stored once; a 503 may have reached the broker all the same
        # (its answer was lost), and is then stored once too, never twice.
        have = stored(runtime)
        assert {have[r] for r in accepted} == {1}
        assert set(have.values()) == {1}
    finally:
        beat.stop()
        worker.stop()
        broker.stop()
