"""The MCP server over streamable HTTP, mounted in the API at ``/mcp``.

Stateless and with JSON answers: every POST carries its own ``Authorization: Bearer
<API key>`` and is served by whichever API process gets it, like any REST call. A request
without a valid key is a 401 problem+json before the MCP layer sees it.
"""

from __future__ import annotations

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.routing import Route

from clarion.api.problems import problem_response
from clarion.core.auth import AuthError
from clarion.mcp.server import build_server

PATH = "/mcp"
PRINCIPAL = "clarion.principal"


class ApiKeyGate:
    """Checks the API key (pure ASGI), then hands the request to the MCP transport with
    the caller in its scope."""

    def __init__(self, app, runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope, receive, send) -> None:
        header = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
        kind, _, secret = header.partition(" ")
        principal = None
        if kind.lower() == "bearer" and secret:
            try:
                principal = await anyio.to_thread.run_sync(self.runtime.api_keys.verify, secret)
            except AuthError:
                principal = None
        if principal is None:
            response = problem_response(
                401,
                "unauthorized",
                "An API key is required: Authorization: Bearer <key>.",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app({**scope, PRINCIPAL: principal}, receive, send)


def _principal_of(ctx):
    return ctx.request.scope[PRINCIPAL]


def mount(app, runtime, submitter) -> StreamableHTTPSessionManager:
    """Serve MCP at ``/mcp`` on the FastAPI app; the caller runs the returned manager in
    the app's lifespan (``async with manager.run()``)."""
    server = build_server(runtime, submitter, _principal_of)
    manager = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
    gate = ApiKeyGate(manager.handle_request, runtime)
    app.router.routes.append(Route(PATH, endpoint=gate, methods=["GET", "POST", "DELETE"]))
    return manager
