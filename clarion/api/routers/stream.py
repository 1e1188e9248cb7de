"""Live events for the end user: ``/v1/me/stream`` (WebSocket) and ``/v1/me/stream/sse``.

Both authenticate before anything is sent (the ``token`` query parameter, since browsers
cannot set headers on these, or ``Authorization: Bearer``), resume from a cursor (``since``,
a ``{"type": "resume", "cursor": N}`` message, or SSE's ``Last-Event-ID``), and carry the
same JSON events: ``notification.created``, ``notification.updated``, ``unread_count``,
``heartbeat`` and ``resync``, each with the ``cursor`` to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from clarion.api.problems import Problem, problem_response
from clarion.api.stream import RESYNC, Connection, Hub, events
from clarion.core.auth import AuthError, verify_user_token
from clarion.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/me/stream", tags=["live events"])
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
    allowed = runtime.settings.stream_allowed_origins
    return origin is None or "*" in allowed or origin in allowed


async def _refuse(ws: WebSocket, status: int, detail: str) -> None:
    # An HTTP answer on the handshake where the server supports it; otherwise close 1008.
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        slug = "unauthorized" if status == 401 else "forbidden"
        await ws.send_denial_response(problem_response(status, slug, detail))
    else:
        await ws.close(code=1008, reason=detail)


@router.websocket("")
async def websocket_stream(ws: WebSocket, since: Since = None, token: Token = None) -> None:
    runtime: Runtime = ws.app.state.runtime
    hub: Hub = ws.app.state.hub
    if not _origin_allowed(runtime, ws.headers.get("origin")):
        await _refuse(ws, 403, "This origin may not connect.")
        return
    me = _subscriber(runtime, token, ws.headers.get("authorization"))
    if me is None:
        await _refuse(ws, 401, "A valid user token is required.")
        return
    await ws.accept()
    conn = hub.register(me)
    sender = asyncio.create_task(_send(ws, runtime, conn, since))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            _on_client_frame(conn, message.get("text"))  # binary frames carry no commands
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.unregister(conn)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


def _on_client_frame(conn: Connection, frame: str | None) -> None:
    """Clients may send {"type": "resume", "cursor": N}; anything else is ignored."""
    if not frame:
        return
    try:
        message = json.loads(frame)
        if message.get("type") == "resume" and isinstance(message.get("cursor"), int):
            conn.offer({"type": "_resume", "cursor": max(0, message["cursor"])})
    except (ValueError, AttributeError, TypeError):
        log.debug("ignored a malformed frame from a %s connection", conn.recipient)


async def _send(ws: WebSocket, runtime: Runtime, conn: Connection, since: int | None) -> None:
    try:
        async for event in events(runtime, conn, since):
            await ws.send_json(event)
    except Exception:  # noqa: BLE001 - the client must learn it has to reconnect
        log.exception("live stream of %s failed", conn.recipient)
        conn.close_code, conn.close_reason = 1011, "internal error: reconnect with your cursor"
    finally:
        if conn.close_code is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=conn.close_code, reason=conn.close_reason)


def _sse(event: dict) -> str:
    lines = []
    if event["type"] not in ("heartbeat", "resync") and "cursor" in event:
        lines.append(f"id: {event['cursor']}")
    lines.append(f"event: {event['type']}")
    lines.append("data: " + json.dumps(event, separators=(",", ":")))
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
    conn = hub.register(me)

    async def body():
        try:
            yield "retry: 2000\n\n"
            async for event in events(runtime, conn, since):
                yield _sse(event)
            if conn.close_code is not None:
                kind = "resync" if conn.close_code == RESYNC else "reconnect"
                yield _sse({"type": kind, "reason": conn.close_reason})
        finally:
            hub.unregister(conn)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
