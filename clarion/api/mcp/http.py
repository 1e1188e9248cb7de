"""The MCP server over streamable HTTP, mounted in the API at ``/mcp``.

Stateless and with JSON answers: every POST carries its own ``Authorization: Bearer
<API key>`` and is served by whichever API process gets it, like any REST call. A request
without a valid key is a 401 problem+json before the MCP layer sees it, and a bad key
counts against its address's failures like a REST call's (429 over the limit).
"""

from __future__ import annotations

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.routing import Route

from clarion.api.mcp.server import build_server
from clarion.api.problems import Problem, problem_response
from clarion.api.ratelimit import client_address
from clarion.core.auth import AuthError

PATH = "/mcp"
PRINCIPAL = "clarion.principal"


class ApiKeyGate:
    """Checks the API key (pure ASGI), then hands the request to the MCP transport with
    the caller in its scope."""

    def __init__(self, app, runtime, gate) -> None:
        self.app, self.runtime, self.gate = app, runtime, gate

    async def __call__(self, scope, receive, send) -> None:
        try:
            principal = await self._principal(scope)
        except Problem as refused:  # 429: too many failures from this address
            response = problem_response(
                refused.status,
                refused.slug,
                refused.detail,
                instance=scope["path"],
                headers=refused.headers,
                **refused.extra,
            )
            await response(scope, receive, send)
            return
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

    async def _principal(self, scope):
        """The key's principal; None without a valid one (a bad key counted as a failure)."""
        header = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret:
            return None
        address = client_address(scope)
        self.gate.check(address)
        try:
            return await anyio.to_thread.run_sync(self.runtime.api_keys.verify, secret)
        except AuthError:
            await anyio.to_thread.run_sync(self.gate.failed, address)
            return None


def _principal_of(ctx):
    return ctx.request.scope[PRINCIPAL]


def mount(app, runtime, submitter) -> StreamableHTTPSessionManager:
    """Serve MCP at ``/mcp`` on the FastAPI app; the caller runs the returned manager in
    the app's lifespan (``async with manager.run()``)."""
    server = build_server(runtime, submitter, _principal_of)
    manager = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
    gate = ApiKeyGate(manager.handle_request, runtime, app.state.failure_gate)
    app.router.routes.append(Route(PATH, endpoint=gate, methods=["GET", "POST", "DELETE"]))
    return manager
