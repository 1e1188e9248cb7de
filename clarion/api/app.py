"""The FastAPI app factory. Settings (or a ready Runtime) come in; nothing is global."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI

from clarion import exposition, logs, telemetry
from clarion.api import cors, problems, requestid
from clarion.api import mcp as mcp_server
from clarion.api import metrics as api_metrics
from clarion.api.batch import Batcher
from clarion.api.coalesce import Coalescer
from clarion.api.deps import storable_params
from clarion.api.guards import BodyLimit, SecurityHeaders
from clarion.api.live_hub import Hub
from clarion.api.ratelimit import FailureGate, RateLimiter, RateLimitHeaders
from clarion.api.routers import (
    addresses,
    deadletters,
    events,
    failed_requests,
    health,
    inbox,
    keys,
    live,
    notifications,
    preferences,
    push,
    requests,
    rules,
    schedules,
    subscribers,
    templates,
    topics,
    ui,
    unsubscribe,
    webhooks,
)
from clarion.api.routers.live import PATH
from clarion.core import enqueue
from clarion.runtime import Runtime
from clarion.settings import Settings
from clarion.version import __version__

MAX_BODY_BYTES = 1024 * 1024

DESCRIPTION = """
Clarion's HTTP API.

* **Producers** authenticate with an API key (`Authorization: Bearer clk_…`, scopes
  `notify` or `admin`) and send notifications; a `202` carries the final ids.
* **End users** authenticate with a user token (a JWT whose `sub` is their subscriber id)
  and read their inbox under `/v1/me`.
* Every error is `application/problem+json` (RFC 9457) with a stable `type`.

## Live events

`GET /v1/me/stream` (WebSocket) and `GET /v1/me/stream/sse` (Server-Sent Events) push the
user's events as JSON: `{"type", "cursor", "data"}`.

| type | data |
|---|---|
| `notification.created` | the notification, as in the inbox list |
| `notification.updated` | `{ids, read_at, archived_at, seen_at, snoozed_until}`, \
`{ids or up_to, seen_at}`, `{ids, deleted}`, `{all, category, read_at or deleted}` |
| `notification.unsnoozed` | the notification, back from a snooze |
| `unread_count` | `{"total", "by_category", "unseen"}`; sent on connect and after every change |
| `heartbeat` | none; every `CLARION_STREAM_HEARTBEAT_SECONDS` when idle |
| `resync` | `{"reason"}`: too much was missed; refetch the inbox, then continue from `cursor` |
| `reauth` | SSE only, last event: `{"reason"}`; the token expired, reconnect with a fresh one |

Authenticate with `?token=<user token>` or `Authorization: Bearer`. Resume with `?since=<cursor>`,
a `{"type": "resume", "cursor": N}` message, or `Last-Event-ID` (SSE): what was missed is
replayed in order, then live events follow, with no gap and no duplicate.

A stream ends when its token does (its `exp`, or `iat` + the maximum token lifetime). Keep
a WebSocket open by sending a fresh token for the same user before then:
`{"type": "auth", "token": "<fresh user token>"}` (no answer; the stream now lasts until
the new token's end). Close codes: 1008 refused (a `resume` cursor that is not an integer
from 0 to 2^63-1, an `auth` token of another user), 1012 server restarting (reconnect with
your cursor), 4000 too slow (resync), 4001 replaced by a newer connection of the same user
(cap per user), 4401 the token expired or an `auth` token is not valid (reconnect with a
fresh token and your cursor).
"""


class Clarion(FastAPI):
    """FastAPI, with the request id bound first, and the live WebSocket served ahead of
    the routing.

    Each held connection keeps its whole chain of ASGI callables suspended; Starlette's
    router and FastAPI's WebSocket route add over half of uvicorn's own memory per
    connection (docs/benchmarks/code.md), so ``/v1/me/stream`` is a plain ASGI function.
    """

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
        else:  # outside every middleware: even the server-error 500 carries the request id
            token, send = requestid.bind(scope, send)
            try:
                await self._route(scope, receive, send)
            finally:
                logs.unbind(token)

    def _route(self, scope, receive, send) -> Awaitable[None]:
        # Returns the coroutine instead of awaiting it: no frame of its own held per stream.
        if scope["type"] == "websocket" and scope["path"] == scope.get("root_path", "") + PATH:
            return live.websocket_stream(self, scope, receive, send)
        return super().__call__(scope, receive, send)


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server.

    Everything loaded at start-up is frozen out of the collector's scans, and young
    collections run every 50,000 allocations instead of 700. The live gateway allocates
    a little per frame, and with the default thresholds the collector took a large share
    of its CPU (docs/benchmarks/code.md).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)


def _close_streams_on_exit(hub: Hub) -> None:
    """Close live streams as soon as the server is told to stop.

    The server waits for open responses before it shuts the app down, and a live stream
    never ends by itself; so on SIGTERM/SIGINT the hub closes them (1012, "reconnect")
    first, then the server's own handler runs.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # e.g. embedded mode: the API runs in a thread; the worker owns signals
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            hub.shutdown()
            previous(signum, frame)

        signal.signal(sig, handler)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Clarion:
    owns_runtime = runtime is None  # a runtime passed in belongs to the caller
    runtime = runtime or Runtime(settings or Settings())
    telemetry.setup("clarion-api")  # when the environment asks for it (the otel extra)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _tune_gc()
        app.state.hub.start()
        _close_streams_on_exit(app.state.hub)
        async with AsyncExitStack() as stack:
            if app.state.mcp is not None:
                await stack.enter_async_context(app.state.mcp.run())
            yield
        app.state.hub.shutdown()
        await app.state.hub.stop()
        if owns_runtime:
            runtime.close()
            exposition.process_exited()  # one of `clarion api --workers N`

    app = Clarion(
        title="Clarion",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(storable_params)],
        # FastAPI's own OpenTelemetry hooks asked the global providers on every request
        # whether to trace; Clarion traces through clarion.telemetry when asked to.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.hub = Hub(runtime)
    app.state.rate_limiter = RateLimiter(runtime.limits)
    app.state.coalescer = Coalescer(
        lambda messages: enqueue.enqueue(runtime.celery, *messages),
        runtime.settings.api_coalesce_max_notifications,
        runtime.settings.api_coalesce_linger_ms / 1000,
        count=app.state.rate_limiter.count,
    )
    app.state.failure_gate = FailureGate(
        app.state.rate_limiter, runtime.settings.auth_failure_rate_limit
    )
    app.state.stream_connects = Batcher(partial(live.count_connects, app.state.rate_limiter))
    problems.install(app)

    routers = (
        notifications.router,
        requests.router,
        schedules.router,
        topics.router,
        subscribers.router,
        inbox.router,
        live.router,
        unsubscribe.router,
        preferences.router,
        deadletters.router,
        failed_requests.router,
        keys.router,
        events.router,
        rules.router,
        templates.router,
        webhooks.router,
        push.router,
        addresses.router,
        health.router,
        ui.router,
    )
    for router in routers:
        app.include_router(router)
    app.state.mcp = None
    if mcp_server.available():  # the `mcp` extra: AI agents at /mcp (clarion.api.mcp)
        from clarion.api.mcp import http as mcp_http

        app.state.mcp = mcp_http.mount(app, runtime, app.state.coalescer)
    app.mount("/ui", ui.static_files(), name="ui")  # after the routes: /ui/session wins
    routes = [route for router in routers for route in router.routes]
    # Outermost last: every answer, the guards' own 401/413 and CORS preflights included,
    # gets the security headers; every answer a browser reads gets the CORS headers.
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, routes=routes)
    cors.install(app, runtime.settings.cors_origins)
    app.add_middleware(SecurityHeaders)
    telemetry.instrument_app(app)
    api_metrics.install(app, runtime)  # outermost: it counts every answer
    return app
