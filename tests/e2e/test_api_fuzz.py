"""Schemathesis against a real ``clarion api`` process: no operation answers 5xx, and what
the API accepted, a real worker stores (no request ends in ``failed_requests``).

Every operation of ``/openapi.json`` gets its examples, the coverage phase's boundary
values (huge integers, empty and odd strings, NUL) and ``FUZZ_EXAMPLES`` generated
requests, with a notify key, an admin key or a user token as the operation needs. The
default is sized for about a minute of ``make test`` on a shared two-core machine; for a
long run: ``CLARION_FUZZ_EXAMPLES=300 pytest tests/e2e/test_api_fuzz.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import func, select

from clarion.api.app import create_app
from clarion.core import queues
from clarion.core.auth import issue_user_token
from clarion.core.lanes import LANES
from clarion.db.models import FailedRequest
from clarion.runtime import Runtime
from clarion.settings import Settings
from tests.conftest import make_key, process_env, server_settings
from tests.e2e.procs import Proc, free_port, wait_for, wait_ready

pytestmark = pytest.mark.e2e
FUZZ_EXAMPLES = int(os.environ.get("CLARION_FUZZ_EXAMPLES", "6"))
SEED = int(os.environ.get("CLARION_FUZZ_SEED", "13"))
# Operations an API key with the notify scope may call; the other API-key ones need admin.
NOTIFY_TAGS = {"notifications", "subscribers", "topics", "events"}
# The create lanes and the engine (events): what turns an accepted request into rows.
STORING_QUEUES = ",".join([queues.create_queue(lane) for lane in LANES] + [queues.ENGINE])
CALLS: Counter[str] = Counter()  # requests sent per operation, for the run's summary


class Target:
    """The API and worker processes, and the credentials the tests call them with."""

    def __init__(self, runtime: Runtime, tmp) -> None:
        env = process_env(runtime.settings.database_url, CLARION_LOG_LEVEL="WARNING")
        self.runtime, self.port = runtime, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api = Proc(["api", "--port", str(self.port)], env, tmp / "api.log")
        self.worker = Proc(
            ["worker", "--queues", STORING_QUEUES, "--concurrency", "1"], env, tmp / "worker.log"
        )
        self.auth = {
            "notify": f"Bearer {make_key(runtime, 'notify')}",
            "admin": f"Bearer {make_key(runtime, 'admin')}",
            "user": f"Bearer {issue_user_token(runtime.settings, 'fuzz-user')}",
        }
        wait_ready(self.base, self.api)
        assert httpx.get(f"{self.base}/openapi.json").json() == OPENAPI

    def authorization(self, operation) -> str:
        security = {s for req in operation.definition.raw.get("security", []) for s in req}
        if "UserToken" in security:
            return self.auth["user"]
        return self.auth["notify" if NOTIFY_TAGS & set(operation.tags or ()) else "admin"]

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop()


@pytest.fixture(scope="module")
def target(pg_url, redis_client, clean_database, tmp_path_factory):
    runtime = Runtime(server_settings(pg_url))
    with runtime.engine.begin() as conn:
        clean_database(conn)
    redis_client.flushdb()
    redis_lib.Redis.from_url(runtime.settings.redis_url).flushdb()
    started = Target(runtime, tmp_path_factory.mktemp("fuzz"))
    yield started
    started.stop()
    runtime.close()


def _openapi() -> dict:
    """The document ``/openapi.json`` serves (the target fixture checks they are equal):
    built here at collection time, so that each operation is a test of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        return create_app(Settings.embedded(Path(tmp))).openapi()


OPENAPI = _openapi()
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": FUZZ_EXAMPLES,
            "database": "none",
            # Our own credentials on every call, not generated Authorization headers.
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error(case, target):
    CALLS[case.operation.label] += 1
    headers = {"Authorization": target.authorization(case.operation)}
    if case.operation.path.endswith("/sse"):  # a live stream never ends: read its status
        request = case.as_transport_kwargs(base_url=target.base, headers=headers)
        with requests.request(**request, stream=True, timeout=10) as response:
            assert response.status_code < 500, case.as_curl_command(base_url=target.base)
        return
    case.call_and_validate(
        base_url=target.base, headers=headers, checks=[not_a_server_error], timeout=30
    )


def _idle(target: Target) -> bool:
    client = target.runtime.celery.connection_for_write().default_channel.client
    names = STORING_QUEUES.split(",")
    return client.hlen("unacked") == 0 and all(client.llen(q) == 0 for q in names)


def test_every_request_the_fuzzing_got_accepted_was_stored(target):
    """Runs after the operations above (file order): every operation was called, and the
    worker has stored all that the API accepted, with no task failing."""
    assert set(CALLS) == {op.label for op in _operations()}, "run the whole module"
    wait_for(lambda: _idle(target), 60, "the worker to drain the create queues", target.worker)
    time.sleep(0.5)  # the last task's commit and ledger settle
    with target.runtime.sessions() as session:
        failed = session.scalars(select(FailedRequest).limit(5)).all()
        count = session.scalar(select(func.count()).select_from(FailedRequest))
    assert count == 0, [(f.kind, f.reason) for f in failed]
    print(f"fuzzed {len(CALLS)} operations with {sum(CALLS.values())} requests (seed {SEED})")
    assert "Traceback" not in target.api.output(), target.api.output()[-3000:]
    assert "raised unexpected" not in target.worker.output(), target.worker.output()[-3000:]


def _operations():
    return [result.ok() for result in schema.get_all_operations()]
