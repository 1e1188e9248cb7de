"""While Redis (the broker) or PostgreSQL is unreachable, the API answers 503 problem+json
with ``Retry-After`` on every route, never a 500 (a client retries a 503), and what it
accepted (202) before the outage is still there after it (docs/operations/runbook.md)."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.core.auth import issue_user_token
from tests.broker import queued
from tests.conftest import make_key
from tests.e2e.procs import free_port
from tests.redisproc import RedisServer

SEND = {"recipients": ["ada"], "category": "news", "title": "hello"}


def assert_unavailable(answer, slug: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == f"urn:clarion:problem:{slug}"
    assert int(answer.headers["retry-after"]) > 0


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_redis_restart_answers_503_and_keeps_what_was_accepted(make_runtime, runtime, own_redis):
    rt = make_runtime(broker_url=f"{own_redis.url}/0", redis_url=f"{own_redis.url}/1")
    key = {"Authorization": f"Bearer {make_key(runtime, 'notify')}"}
    user = {"Authorization": f"Bearer {issue_user_token(runtime.settings, 'ada')}"}
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as api:
        accepted = [api.post("/v1/notifications", json=SEND, headers=key) for _ in range(3)]
        assert [a.status_code for a in accepted] == [202] * 3

        own_redis.stop()
        during = [
            api.post("/v1/notifications", json=SEND, headers=key),
            api.post("/v1/notifications", json=SEND, headers={**key, "Idempotency-Key": "k"}),
            api.get(f"/v1/notifications/{uuid.uuid4()}", headers=key),
            api.get("/v1/me/notifications", headers=user),
        ]
        own_redis.start()
        deadline, after = time.monotonic() + 20, None
        while time.monotonic() < deadline:  # as a client retries after Retry-After
            after = api.post("/v1/notifications", json=SEND, headers=key)
            if after.status_code == 202:
                break
            assert_unavailable(after, "broker-unavailable")
            time.sleep(0.2)

    for answer in during:
        assert_unavailable(answer, "broker-unavailable")
    assert after is not None and after.status_code == 202
    assert queued(rt.celery) == 4  # the three from before the restart, and the retry


def test_an_unreachable_database_answers_503(make_runtime, runtime):
    key = {"Authorization": f"Bearer {make_key(runtime, 'notify')}"}
    user = {"Authorization": f"Bearer {issue_user_token(runtime.settings, 'ada')}"}
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/clarion"
    rt = make_runtime(database_url=closed)
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as api:
        answers = [
            api.post("/v1/notifications", json=SEND, headers=key),  # the key's lookup
            api.get("/v1/me/notifications", headers=user),  # a session
            api.get(f"/v1/notifications/{uuid.uuid4()}", headers=key),
        ]
    for answer in answers:
        assert_unavailable(answer, "database-unavailable")
