"""Live events for the end user: ``/v1/me/stream`` (WebSocket) and ``/v1/me/stream/sse``.

Both authenticate before anything is sent (the ``token`` query parameter, since browsers
cannot set headers on these, or ``Authorization: Bearer``), resume from a cursor (``since``,
a ``{"type": "resume", "cursor": N}`` message, or SSE's ``Last-Event-ID``), and carry the
same JSON events: ``notification.created``, ``notification.updated``, ``unread_count``,
``heartbeat`` and ``resync``, each with the ``cursor`` to resume from.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from clarion.api.problems import Problem, problem_response
from clarion.api.stream import RESUME, RESYNC, Connection, Hub
from clarion.core.auth import AuthError, verify_user_token
from clarion.runtime import Runtime

log = logging.getLogger(__name__)
SSE_QUEUE = 64  # frames between the hub and an SSE response
router = APIRouter(prefix="/v1/me/stream", tags=["live events"])
PATH = "/v1/me/stream"  # the WebSocket, served by websocket_stream ahead of the routing
Since = Annotated[int | None, Query(ge=0, description="Resume after this cursor")]
Token = Annotated[str | None, Query(description="User token (for clients without headers)")]


def _subscriber(runtime: Runtime, token: str | None, authorization: str | None) -> str | None:
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:]
    if not token:
        return None
    try:
        return verify_user_token(runtime.settings, token)
    except AuthError:
        return None


def _origin_allowed(runtime: Runtime, origin: str | None) -> bool:
    allowed = runtime.settings.stream_origins
    return origin is None or "*" in allowed or origin in allowed


async def _refuse(scope, send, status: int, slug: str, detail: str) -> None:
    # An HTTP answer on the handshake where the server supports it; otherwise close 1008.
    if "websocket.http.response" in scope.get("extensions", {}):
        response = problem_response(status, slug, detail)
        start = {"status": status, "headers": response.raw_headers}
        await send({"type": "websocket.http.response.start", **start})
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": detail})


def _handshake(runtime: Runtime, scope) -> tuple[str | None, int | None, tuple | None]:
    """(subscriber, since, refusal): who connects from where, or why they may not."""
    origin = authorization = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    query = parse_qs(scope["query_string"].decode("latin-1"))
    if not _origin_allowed(runtime, origin):
        return None, None, (403, "forbidden", "This origin may not connect.")
    since = query.get("since", [None])[-1]
    if since is not None and not (since.isascii() and since.isdigit()):
        return None, None, (422, "validation-error", "since must be a cursor (an integer >= 0).")
    me = _subscriber(runtime, query.get("token", [None])[-1], authorization)
    if me is None:
        return None, None, (401, "unauthorized", "A valid user token is required.")
    return me, None if since is None else int(since), None


async def websocket_stream(app, scope, receive, send) -> None:
    """``/v1/me/stream`` as a raw ASGI app, dispatched before FastAPI's routing (app.py).

    A held connection costs only this coroutine and a :class:`Connection`: the hub sends
    to it, and this loop only reads the client's frames until it leaves.
    """
    runtime: Runtime = app.state.runtime
    hub: Hub = app.state.hub
    await receive()  # websocket.connect
    me, since, refusal = _handshake(runtime, scope)
    if refusal is not None:
        await _refuse(scope, send, *refusal)
        return
    await send({"type": "websocket.accept"})
    conn = hub.open(me, send, since)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            _on_client_frame(conn, message.get("text"))  # binary frames carry no commands
    finally:
        hub.unregister(conn)


def _on_client_frame(conn: Connection, frame: str | None) -> None:
    """Clients may send {"type": "resume", "cursor": N}; anything else is ignored."""
    if not frame:
        return
    try:
        message = json.loads(frame)
        if message.get("type") == "resume" and isinstance(message.get("cursor"), int):
            conn.control(RESUME, max(0, message["cursor"]))
    except (ValueError, AttributeError, TypeError):
        log.debug("ignored a malformed frame from a %s connection", conn.recipient)


def _sse(text: str) -> str:
    event = json.loads(text)
    lines = []
    if event["type"] not in ("heartbeat", "resync") and "cursor" in event:
        lines.append(f"id: {event['cursor']}")
    lines.append(f"event: {event['type']}")
    lines.append("data: " + text)
    return "\n".join(lines) + "\n\n"


@router.get(
    "/sse",
    summary="Live events as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 401: {"description": "No token"}},
    # Checked by hand (EventSource cannot send headers, so `token` works too); declared here.
    openapi_extra={"security": [{"UserToken": []}]},
)
async def sse_stream(
    request: Request,
    since: Since = None,
    token: Token = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The WebSocket's events over SSE; ``Last-Event-ID`` resumes where the browser left."""
    runtime: Runtime = request.app.state.runtime
    hub: Hub = request.app.state.hub
    me = _subscriber(runtime, token, authorization)
    if me is None:
        raise Problem(401, "unauthorized", "A valid user token is required.")
    if last_event_id and last_event_id.isdigit():
        since = int(last_event_id)
    # The same Connection as the WebSocket's, sending into a bounded queue that the
    # response drains: a full queue suspends send(), which puts it on the slow path.
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SSE_QUEUE)

    async def body():
        conn = hub.open(me, queue.put, since)
        try:
            yield "retry: 2000\n\n"
            while (message := await queue.get())["type"] == "websocket.send":
                yield _sse(message["text"])
            kind = "resync" if message["code"] == RESYNC else "reconnect"
            yield _sse(json.dumps({"type": kind, "reason": message["reason"]}))
        finally:
            hub.unregister(conn)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
