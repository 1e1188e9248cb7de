"""The JSON log format, the request id's checks, and how ids and trace contexts cross the
coalescer's thread to the task message."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from clarion import logs, telemetry
from clarion.api import requestid
from clarion.api.coalesce import Coalescer
from clarion.core import enqueue
from clarion.core.schemas import NotificationCreate

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"


@pytest.fixture
def json_lines():
    logs.install()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("clarion.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_json_line_has_the_fields_the_ids_in_scope_and_no_secret(json_lines):
    logger, lines = json_lines
    with logs.bound(request_id="abc-123", task_id="t-1", notification_id=None):
        try:
            raise ValueError(f"GET /v1/me/stream?token={JWT}")
        except ValueError:
            logger.exception("refused %s", f"?token={JWT}")
    logger.warning("outside")
    inside, outside = lines()
    assert inside["time"].endswith("Z") and inside["level"] == "ERROR"
    assert inside["logger"] == "clarion.test.json"
    assert inside["message"] == "refused ?token=[redacted]"
    assert inside["request_id"] == "abc-123" and inside["task_id"] == "t-1"
    assert "notification_id" not in inside  # None is not bound
    assert "ValueError" in inside["exception"] and JWT not in inside["exception"]
    assert "request_id" not in outside and "exception" not in outside


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("abc-123", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("svc:trace/1.2@x", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ('a"b', False),
        ("-leading", False),
        ("line\nbreak", False),
        ("clk_" + "A" * 20, False),  # shaped like an API key: never echoed into logs
        (JWT, False),
    ],
)
def test_a_request_id_header_is_taken_only_when_sane(value, kept):
    assert (requestid.sane(value) == value) is kept


def message():
    return enqueue.prepare(NotificationCreate(recipients=["ada"], category="x", title="t"))


def test_the_coalescer_carries_each_requests_id_into_the_publish():
    seen: list[tuple[dict, dict]] = []
    entered, gate = threading.Event(), threading.Event()

    def publish(messages):
        seen.append((dict(logs.context()), dict(logs.request_ids())))
        entered.set()
        gate.wait(5)  # hold the first publish so the next requests share one

    coalescer = Coalescer(publish, 500, linger=0.05)
    messages = [message() for _ in range(3)]

    def submit(i: int) -> None:
        with logs.bound(request_id=f"req-{i}"):
            coalescer.submit(messages[i])

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert entered.wait(5)  # the first is being published
    others = [threading.Thread(target=submit, args=(i,)) for i in (1, 2)]
    for t in others:
        t.start()
    while coalescer._queue.qsize() < 2:  # both queued behind the publish in flight
        time.sleep(0.001)
    gate.set()
    for t in [first, *others]:
        t.join(5)

    alone, together = seen[0], seen[-1]
    assert alone[0]["request_id"] == "req-0"
    assert alone[1] == {str(messages[0].request_id): "req-0"}
    assert together[1] == {str(messages[i].request_id): f"req-{i}" for i in (1, 2)}
    assert "request_id" not in together[0]  # two requests: no single id for the task


def test_a_coalesced_publish_is_a_child_of_the_first_request_linked_to_all(monkeypatch):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()  # not the global one: nothing else in the suite traces
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(telemetry, "_state", {"on": True, "tracer": tracer})
    requests = [tracer.start_span(f"POST {i}") for i in range(2)]
    contexts = [trace.set_span_in_context(span) for span in requests]
    with telemetry.coalesced([*contexts, None], 3):
        pass
    [publish] = exported.get_finished_spans()
    assert publish.name == "clarion.coalesce publish"
    assert publish.parent.span_id == requests[0].get_span_context().span_id
    assert publish.context.trace_id == requests[0].get_span_context().trace_id
    linked = [link.context.span_id for link in publish.links]
    assert linked == [span.get_span_context().span_id for span in requests]


def test_tracing_off_loads_no_tracer_and_no_instrumentation():
    # (redis-py imports the metrics SDK by itself when it is installed: not counted.)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLARION_OTEL"))}
    code = (
        "import sys; from clarion.api.app import create_app; from clarion import telemetry;"
        "from clarion.settings import Settings;"
        "create_app(Settings(secret_key='s' * 40));"
        "assert not telemetry.enabled();"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace',"
        " 'opentelemetry.instrumentation'))];"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_published_task_carries_the_request_ids_a_big_map_only_to_create():
    from clarion.workers import logcontext

    small = {f"send-{i}": f"req-{i}" for i in range(2)}
    big = {f"send-{i}": f"req-{i}" for i in range(logcontext.MAX_CARRIED + 1)}

    def headers_of(task: str, mapping: dict) -> dict:
        headers: dict = {}
        token = logs.carry(mapping)
        try:
            with logs.bound(request_id="abc-123"):
                logcontext._publishing(sender=task, headers=headers)
        finally:
            logs.uncarry(token)
        return headers

    assert headers_of("clarion.deliver", small) == {
        logcontext.REQUEST_ID: "abc-123",
        logcontext.REQUEST_IDS: small,
    }
    assert headers_of("clarion.create", big)[logcontext.REQUEST_IDS] == big
    assert headers_of("clarion.deliver", big) == {logcontext.REQUEST_ID: "abc-123"}
    assert headers_of("clarion.deliver", {}) == {logcontext.REQUEST_ID: "abc-123"}
