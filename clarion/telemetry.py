"""Optional OpenTelemetry tracing (the ``otel`` extra): one trace per send, from
``POST /v1/notifications`` through the ``create`` and ``deliver`` tasks to the channel's
call (SMTP, web push, webhook).

The official instrumentations make the spans where they exist: FastAPI (the request),
Celery (each publish and each task run, the trace context travelling in the message
headers), SQLAlchemy, Redis and httpx (the HTTP call of webhooks and web push). Clarion
adds only what no library sees: the coalesced publish of several requests (a span whose
parent is the first request and which links to all of them) and each channel send (email
uses a client no instrumentation covers).

On when ``CLARION_OTEL=1`` or an ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is set (and
``OTEL_SDK_DISABLED`` is not true); the exporter is OTLP over HTTP, configured by the
standard ``OTEL_*`` variables. ``CLARION_OTEL_FILE`` writes the spans as JSON lines to a
file instead (debugging, tests). Off, nothing of OpenTelemetry is imported and each hook
is one boolean test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from clarion import logs

log = logging.getLogger(__name__)

_state: dict[str, Any] = {"on": False}
_lock = threading.Lock()
_engines: weakref.WeakSet = weakref.WeakSet()


def wanted() -> bool:
    """Whether this process's environment asks for tracing."""
    from clarion.settings import LogSettings

    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    settings = LogSettings()
    return bool(
        settings.otel
        or settings.otel_file
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    return _state["on"]


def setup(service: str) -> bool:
    """Start tracing in this process when the environment asks for it (idempotent).
    ``service`` is the default ``service.name`` (``OTEL_SERVICE_NAME`` wins)."""
    if _state["on"] or not wanted():
        return _state["on"]
    with _lock:
        if _state["on"]:
            return True
        try:
            _start(service)
        except ImportError:
            log.error("tracing is on but the otel extra is missing: pip install 'clarion[otel]'")
            return False
        _state["on"] = True
    return True


def _start(service: str) -> None:
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    from clarion.settings import LogSettings

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    path = LogSettings().otel_file
    if path is not None:
        out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _state["tracer"] = trace.get_tracer("clarion")
    CeleryInstrumentor().instrument()
    RedisInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    # SQLAlchemy 2.1 is past the range the instrumentation declares (< 2.1) though its
    # engine events are unchanged: the check is skipped (tests/e2e/test_traces.py sees the
    # spans). The instrumentor is a singleton, so every engine is given to it at once.
    SQLAlchemyInstrumentor().instrument(engines=list(_engines), skip_dep_check=True)
    logs.add_enricher(_trace_ids)


def _trace_ids(line: dict[str, Any]) -> None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        line["trace_id"] = format(context.trace_id, "032x")
        line["span_id"] = format(context.span_id, "016x")


def track_engine(engine) -> None:
    """Trace this SQLAlchemy engine's statements when tracing starts: each process starts
    it after building its runtime (the API's app factory, a worker process after the fork,
    beat), so the runtime's engine is traced."""
    if _state["on"]:
        log.debug("an engine made after tracing started is not traced")
    _engines.add(engine)


def instrument_app(app) -> None:
    if _state["on"]:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


def flush() -> None:
    """Export what is buffered (a worker process about to exit)."""
    if _state["on"]:
        _state["provider"].force_flush()


def capture() -> Any:
    """The current trace context (None when tracing is off), to continue it in another
    thread: the coalescer publishes requests from its own."""
    if not _state["on"]:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def coalesced(contexts: list[Any], requests: int) -> Iterator[None]:
    """The span of one publish carrying several requests: a child of the first request's
    trace, linked to every request's span, so each request's trace reaches the task."""
    found = [c for c in contexts if c is not None]
    if not _state["on"] or not found:
        yield
        return
    from opentelemetry import trace

    links = []
    for ctx in found:
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    with _state["tracer"].start_as_current_span(
        "clarion.coalesce publish",
        context=found[0],
        links=links,
        kind=trace.SpanKind.INTERNAL,
        attributes={"clarion.requests": requests},
    ):
        yield


@contextlib.contextmanager
def sending(channel: str, delivery_id: Any, attempt: int) -> Iterator[None]:
    """A span around one channel send (SMTP, web push, webhook): the instrumented HTTP
    call of a webhook nests inside it; the others have no instrumentation of their own."""
    if not _state["on"]:
        yield
        return
    from opentelemetry import trace

    with _state["tracer"].start_as_current_span(
        f"clarion.send {channel}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            "clarion.channel": channel,
            "clarion.delivery_id": str(delivery_id),
            "clarion.attempt": attempt,
        },
    ):
        yield
