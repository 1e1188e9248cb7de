"""The FastAPI app factory. Settings (or a ready Runtime) come in; nothing is global."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from clarion import __version__
from clarion.api import problems
from clarion.api.routers import health, inbox, notifications, subscribers
from clarion.runtime import Runtime
from clarion.settings import Settings

MAX_BODY_BYTES = 1024 * 1024

DESCRIPTION = """
Clarion's HTTP API.

* **Producers** authenticate with an API key (`Authorization: Bearer clk_…`, scopes
  `notify` or `admin`) and send notifications; a `202` carries the final ids.
* **End users** authenticate with a user token (a JWT whose `sub` is their subscriber id)
  and read their inbox under `/v1/me`.
* Every error is `application/problem+json` (RFC 9457) with a stable `type`.
"""


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if app.state.owns_runtime:
            runtime.close()

    app = FastAPI(
        title="Clarion",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.owns_runtime = settings is not None or runtime is None
    problems.install(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return problems.problem_response(
                413, "body-too-large", f"Request bodies are limited to {MAX_BODY_BYTES} bytes."
            )
        return await call_next(request)

    for router in (notifications.router, subscribers.router, inbox.router, health.router):
        app.include_router(router)
    return app
