"""``CLARION_LOG_FORMAT=json``: real ``clarion api`` and ``clarion worker`` processes write
only JSON lines, and the lines of one send carry its request id from the API through the
worker's create and deliver tasks, with the notification, delivery and task ids."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from clarion.db.models import DeadLetter
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e


def parsed(log: str) -> list[dict]:
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "nothing logged"
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line[:300]!r}")
    return out


def test_json_logs_carry_the_request_id_through_the_worker(runtime, tmp_path):
    env = process_env(
        runtime.settings.database_url,
        CLARION_LOG_FORMAT="json",
        CLARION_LOG_LEVEL="DEBUG",
        CLARION_DELIVERY_MAX_ATTEMPTS="1",  # the webhook fails once, to the dead letters
    )
    notify = run(["keys", "create", "json", "--scope", "notify"], env).split()[-1]
    admin = run(["keys", "create", "json-admin", "--scope", "admin"], env).split()[-1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = Proc(
        ["worker", "--concurrency", "1"], env, tmp_path / "worker.out", tmp_path / "worker.log"
    )
    # Two server processes: each is spawned and configures its logging from uvicorn's
    # log_config alone.
    api = Proc(
        ["api", "--port", str(port), "--workers", "2"],
        env,
        tmp_path / "api.out",
        tmp_path / "api.log",
    )
    producer = {"Authorization": f"Bearer {notify}"}
    body = {"recipients": ["ada"], "category": "logs", "title": "hi", "channels": ["webhook"]}
    try:
        wait_ready(base, api, timeout=90)  # two spawned processes import the app
        hook = {"url": "https://clarion-test.invalid/hook", "categories": ["logs"]}
        created = httpx.post(
            f"{base}/v1/webhooks", json=hook, headers={"Authorization": f"Bearer {admin}"}
        )
        assert created.status_code == 201, created.text
        sent = httpx.post(
            f"{base}/v1/notifications", json=body, headers={**producer, "X-Request-ID": "abc-123"}
        )
        assert sent.status_code == 202, sent.text
        assert sent.headers["X-Request-ID"] == "abc-123"
        nid = sent.json()["notifications"][0]["id"]
        send_request = sent.json()["request_id"]

        # None sent: one is made up and returned; an insane one is replaced, not echoed.
        plain = httpx.get(f"{base}/readyz")
        uuid.UUID(plain.headers["X-Request-ID"])
        for insane in ("x" * 200, "a b", "<script>", "clk_" + "A" * 30):
            answer = httpx.get(f"{base}/readyz", headers={"X-Request-ID": insane})
            assert answer.headers["X-Request-ID"] != insane
            uuid.UUID(answer.headers["X-Request-ID"])
        # Errors too: a problem+json 422 and a 401 answer with the request id.
        refused = httpx.post(
            f"{base}/v1/notifications", json={}, headers={**producer, "X-Request-ID": "bad-1"}
        )
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["X-Request-ID"] == "bad-1"
        unauthorised = httpx.post(f"{base}/v1/notifications", json=body)
        assert unauthorised.status_code == 401 and "X-Request-ID" in unauthorised.headers

        def dead_lettered() -> bool:
            with runtime.sessions() as s:
                return s.scalar(select(func.count()).select_from(DeadLetter)) == 1

        wait_for(dead_lettered, 30, "the webhook delivery in the dead letters", worker)
        wait_for(lambda: "dead letter" in worker.output(), 30, "the dead letter's log line")
    finally:
        api.stop()
        worker.stop()

    # stderr is the log: JSON only. (stdout has Celery's shutdown notice, which it prints.)
    api_lines, worker_lines = parsed(api.errors()), parsed(worker.errors())
    for line in api_lines + worker_lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["time"].endswith("Z")
    # uvicorn's access line for the send, with its request id.
    access = [
        line
        for line in api_lines
        if line["logger"] == "uvicorn.access" and "POST /v1/notifications" in line["message"]
    ]
    [sent_line] = [line for line in access if line.get("request_id") == "abc-123"]
    assert (sent_line["method"], sent_line["path"], sent_line["status"]) == (
        "POST",
        "/v1/notifications",
        202,
    )
    assert any(line.get("request_id") == "bad-1" for line in access), access

    # The worker's lines about that notification: its create and deliver tasks.
    about = [line for line in worker_lines if line.get("notification_id") == nid]
    assert about, "the worker logged nothing about the notification"
    for line in about:
        assert line["request_id"] == "abc-123", line
        assert line["send_request_id"] == send_request, line
        assert line["task_id"], line
    tasks = {line["task_name"] for line in about}
    assert tasks == {"clarion.create", "clarion.deliver"}, tasks
    delivered = [line for line in about if line["task_name"] == "clarion.deliver"]
    assert all(line["delivery_id"] and line["channel"] == "webhook" for line in delivered)
    # The dead letter's own task inherits the request id from the deliver task.
    letter = [line for line in worker_lines if line["message"].startswith("dead letter")]
    assert letter and letter[0]["request_id"] == "abc-123"
    assert letter[0]["task_name"] == "clarion.dead_letter"
