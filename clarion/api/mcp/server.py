"""The MCP server (the SDK's low-level ``Server``): tools, resources, errors, transports.

Each request names its caller: over HTTP the API key checked at the door
(:mod:`clarion.api.mcp.http`), over stdio the key in ``CLARION_MCP_API_KEY``, verified again
on every call so a revoked key stops working. A tool's errors are returned as its result
(``isError``) carrying the same problem+json body the REST API answers with, so an agent
sees the ``type``, the ``detail`` and which field was wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import anyio
import mcp_types as types
from fastapi.exceptions import RequestValidationError
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ValidationError

from clarion.api.coalesce import Coalescer
from clarion.api.deps import authorize
from clarion.api.mcp.tools import TOOLS, Call
from clarion.api.problems import Problem
from clarion.api.ratelimit import RateLimiter
from clarion.api.routers import rules, templates
from clarion.core.auth import AuthError, Principal
from clarion.version import __version__

log = logging.getLogger(__name__)
PrincipalOf = Callable[[Any], Principal]  # (request context) -> the caller, or Problem 401
INSTRUCTIONS = (
    "Clarion sends notifications to people: in their in-app inbox, by email, push or "
    "webhook, following their preferences. Use schedule_notification to send now, later or "
    "again and again; read clarion://templates and clarion://rules to see what exists."
)
RESOURCES = {
    "clarion://templates": (
        "templates",
        "Every template key with its active versions (channel, locale): what "
        "schedule_notification can send by `template`. Needs an admin key.",
    ),
    "clarion://rules": (
        "rules",
        "The rule engine's rules (what Clarion notifies about by itself), their config and "
        "last run. Needs an admin key.",
    ),
}


def problem_body(exc: Problem) -> dict[str, Any]:
    """The problem+json body the REST API would answer with."""
    return {
        "type": f"urn:clarion:problem:{exc.slug}",
        "status": exc.status,
        "detail": exc.detail,
        **exc.extra,
    }


def _invalid(errors: list[dict[str, Any]]) -> Problem:
    cleaned = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return Problem(422, "validation-error", "The arguments are not valid.", errors=cleaned)


def _result(payload: dict[str, Any], error: bool = False) -> types.CallToolResult:
    text = json.dumps(payload, ensure_ascii=False, default=str)
    return types.CallToolResult(
        content=[types.TextContent(text=text)], structured_content=payload, is_error=error
    )


def _run_tool(call_of: Callable[[], Call], name: str, arguments: dict[str, Any]) -> dict:
    """Check the caller's scope, validate the arguments against the tool's model, run it.
    Blocking (database, broker): called in a worker thread."""
    tool = TOOLS[name]
    call = call_of()
    authorize(call.principal, tool.scope, call.runtime)
    try:
        args = tool.model.model_validate(arguments)
    except ValidationError as exc:
        raise _invalid(exc.errors()) from None
    return tool.run(call, args)


def _read(call: Call, uri: str) -> Any:
    authorize(call.principal, "admin")  # as GET /v1/templates and GET /v1/rules
    with call.session() as session:
        listed: Sequence[BaseModel] = (
            templates.list_templates(session, call.principal)
            if uri == "clarion://templates"
            else rules.list_rules(call.runtime, session, call.principal)
        )
    return [item.model_dump(mode="json") for item in listed]


def build_server(runtime, submitter, principal_of: PrincipalOf) -> Server:
    """The MCP server over this process's runtime; ``principal_of`` names each caller."""

    def call_for(ctx) -> Callable[[], Call]:
        return lambda: Call(runtime=runtime, submitter=submitter, principal=principal_of(ctx))

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description,
                    input_schema=t.model.model_json_schema(),
                    annotations=types.ToolAnnotations(
                        read_only_hint=t.read_only, idempotent_hint=t.read_only
                    ),
                )
                for t in TOOLS.values()
            ]
        )

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in TOOLS:
            return _result(
                problem_body(Problem(404, "not-found", f"No tool {params.name!r}.")), True
            )
        try:
            payload = await anyio.to_thread.run_sync(
                _run_tool, call_for(ctx), params.name, params.arguments or {}
            )
        except Problem as exc:
            return _result(problem_body(exc), error=True)
        except RequestValidationError as exc:
            return _result(problem_body(_invalid(list(exc.errors()))), error=True)
        except Exception:  # noqa: BLE001 - an agent gets a problem, never a trace
            log.exception("MCP tool %s failed", params.name)
            problem = Problem(500, "internal-error", "The tool failed; see the server's log.")
            return _result(problem_body(problem), error=True)
        return _result(payload)

    async def list_resources(ctx, params) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=uri, name=name, description=text, mime_type="application/json")
                for uri, (name, text) in RESOURCES.items()
            ]
        )

    async def read_resource(
        ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            if uri not in RESOURCES:
                raise Problem(404, "not-found", f"No resource {uri!r}.")
            listed = await anyio.to_thread.run_sync(_read, call_for(ctx)(), uri)
        except Problem as exc:  # a protocol error carrying the problem+json body
            raise MCPError(types.INVALID_PARAMS, exc.detail, problem_body(exc)) from None
        text = json.dumps(listed, ensure_ascii=False)
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
        )

    return Server(
        "clarion",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )


def direct_submit(runtime) -> Coalescer:
    """Publishes each send at once, on the caller's thread, after counting its limits
    (stdio has one caller: nothing to coalesce)."""
    from clarion.core import enqueue

    publish = partial(enqueue.enqueue, runtime.celery)
    return Coalescer(
        lambda messages: publish(*messages), 1, count=RateLimiter(runtime.limits).count
    )


def serve_stdio(runtime, secret: str) -> None:
    """``clarion mcp``: serve one local assistant over stdin/stdout as the key ``secret``."""
    runtime.api_keys.verify(secret)  # a wrong key stops here, before any message

    def principal_of(_ctx) -> Principal:
        try:
            return runtime.api_keys.verify(secret)
        except AuthError:
            raise Problem(401, "unauthorized", "CLARION_MCP_API_KEY is not valid.") from None

    server = build_server(runtime, direct_submit(runtime), principal_of)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)
