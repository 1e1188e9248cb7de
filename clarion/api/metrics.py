"""The API's metrics: every request counted by route template, and ``GET /metrics``.

``/metrics`` is not behind user or API-key auth (Prometheus has neither); with
``CLARION_METRICS_TOKEN`` set it wants that bearer token, and with ``CLARION_METRICS_PORT``
(``clarion api --metrics-port``) it is served on that port instead and is a 404 here.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from clarion import exposition, metrics
from clarion.api.problems import Problem
from clarion.workers.queue_metrics import QueueCollector

UNMATCHED = "unmatched"  # answered before routing (no route matched, or a guard refused)

router = APIRouter(include_in_schema=False)


def route_of(scope) -> str:
    """The template of the route that answered (``/v1/notifications/{id}``), never the
    raw path: a path carries ids, and each distinct label value is a new time series."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class RequestMetrics:
    """Pure ASGI middleware, outermost: counts every HTTP answer (the guards' 401/413 and
    CORS preflights too) with the time to its response head."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def send_counted(message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                metrics.http_request(
                    scope["method"],
                    route_of(scope),
                    message["status"],
                    time.perf_counter() - started,
                )
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if not answered:  # an exception escaped: the server answers 500
                metrics.http_request(
                    scope["method"], route_of(scope), 500, time.perf_counter() - started
                )


@router.get("/metrics")
async def scrape(request: Request) -> Response:
    state = request.app.state
    token = state.runtime.settings.metrics_token
    secret = token.get_secret_value() if token else None
    if not exposition.authorized(secret, request.headers.get("authorization")):
        raise Problem(
            401,
            "unauthorized",
            "A metrics bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if state.metrics_registry is None:  # built at the first scrape: the broker's app is lazy
        state.metrics_registry = exposition.registry(QueueCollector(state.runtime.celery))
    body = await run_in_threadpool(exposition.render, state.metrics_registry)
    return Response(body, media_type=exposition.CONTENT_TYPE)


def install(app, runtime) -> None:
    """Count the app's requests; serve /metrics unless it has a port of its own."""
    app.state.metrics_registry = None
    if runtime.settings.metrics_port is None:
        app.include_router(router)
    app.add_middleware(RequestMetrics)
