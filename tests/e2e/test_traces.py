"""OpenTelemetry (the ``otel`` extra) across real processes: one trace from the API's
``POST /v1/notifications`` through the worker's ``create`` and ``deliver`` tasks to the
webhook's HTTP call, the context carried by the Celery instrumentation in the task
messages' headers. Each process writes its spans to a file (``CLARION_OTEL_FILE``)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e


def spans_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_trace_from_the_api_request_to_the_webhook_call(runtime, webhook_receiver, tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    env = process_env(
        runtime.settings.database_url,
        CLARION_OTEL_FILE=str(spans_file),
        CLARION_LOG_FORMAT="json",
        CLARION_LOG_LEVEL="DEBUG",
    )
    notify = run(["keys", "create", "traces", "--scope", "notify"], env).split()[-1]
    admin = run(["keys", "create", "traces-admin", "--scope", "admin"], env).split()[-1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = Proc(
        ["worker", "--concurrency", "1"], env, tmp_path / "worker.out", tmp_path / "worker.log"
    )
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.out", tmp_path / "api.log")
    try:
        wait_ready(base, api)
        url = webhook_receiver.url("traced")
        created = httpx.post(
            f"{base}/v1/webhooks",
            json={"url": url, "categories": ["traced"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
        webhook_receiver.trust(url, created.json()["secret"])
        sent = httpx.post(
            f"{base}/v1/notifications",
            json={
                "recipients": ["ada"],
                "category": "traced",
                "title": "hi",
                "channels": ["webhook"],
            },
            headers={"Authorization": f"Bearer {notify}"},
        )
        assert sent.status_code == 202, sent.text
        nid = sent.json()["notifications"][0]["id"]
        wait_for(lambda: len(webhook_receiver.deliveries) == 1, 30, "the webhook call", worker)
        wait_for(lambda: "clarion.send webhook" in spans_file.read_text(), 10, "the send span")
    finally:
        api.stop()
        worker.stop()

    spans = spans_of(spans_file)
    [request] = [
        s for s in spans if s["name"] == "POST /v1/notifications" and s["kind"] == "SpanKind.SERVER"
    ]
    trace_id = request["context"]["trace_id"]
    traced = [s for s in spans if s["context"]["trace_id"] == trace_id]
    names = {s["name"] for s in traced}
    # The API's publish, the worker's two task runs, the send, and the webhook's HTTP call.
    assert {
        "clarion.coalesce publish",
        "apply_async/clarion.create",
        "run/clarion.create",
        "apply_async/clarion.deliver",
        "run/clarion.deliver",
        "clarion.send webhook",
    } <= names, names
    services = {s["resource"]["attributes"]["service.name"] for s in traced}
    assert services == {"clarion-api", "clarion-worker"}
    send = next(s for s in traced if s["name"] == "clarion.send webhook")
    http = [
        s
        for s in traced
        if s["kind"] == "SpanKind.CLIENT" and s["parent_id"] == send["context"]["span_id"]
    ]
    assert http and http[0]["attributes"].get("http.response.status_code", 200) == 200, http
    # The database and Redis calls of the API and the tasks are in the trace too.
    systems = {
        (s["resource"]["attributes"]["service.name"], s["attributes"].get("db.system"))
        for s in traced
    }
    assert {("clarion-worker", "postgresql"), ("clarion-worker", "redis")} <= systems, systems

    # The worker's JSON log lines about the delivery carry the trace id.
    lines = [json.loads(line) for line in worker.errors().splitlines() if line.strip()]
    about = [line for line in lines if line.get("notification_id") == nid and "delivery_id" in line]
    assert about and all(line["trace_id"] == trace_id.removeprefix("0x") for line in about)
