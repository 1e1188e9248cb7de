"""Live events for the end user: ``/v1/me/stream`` (WebSocket) and ``/v1/me/stream/sse``.

Both authenticate before anything is sent (the ``token`` query parameter, since browsers
cannot set headers on these, or ``Authorization: Bearer``), resume from a cursor (``since``,
a ``{"type": "resume", "cursor": N}`` message, or SSE's ``Last-Event-ID``), and carry the
same JSON events: ``notification.created``, ``notification.updated``, ``unread_count``,
``heartbeat`` and ``resync``, each with the ``cursor`` to resume from.

A stream ends when its token does (WebSocket: close 4401; SSE: a ``reauth`` event). A
WebSocket client renews it in place with ``{"type": "auth", "token": "<fresh token>"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from clarion import metrics
from clarion.api.live_hub import EXPIRED, REFUSED, RESUME, RESYNC, Connection, Hub
from clarion.api.problems import Problem, problem_response, unavailable
from clarion.api.ratelimit import STREAM_CONNECT, RateLimiter, client_address, refuse
from clarion.core.auth import AuthError, UserToken, verify_user_claims
from clarion.core.ratelimits import Check, LimitsUnavailable, Refusal
from clarion.core.replay import Start
from clarion.runtime import Runtime

log = logging.getLogger(__name__)
SSE_QUEUE = 64  # frames between the hub and an SSE response
# The last event of an SSE stream, by the WebSocket close code it stands for.
SSE_ENDINGS = {RESYNC: "resync", EXPIRED: "reauth"}
router = APIRouter(prefix="/v1/me/stream", tags=["live events"])
PATH = "/v1/me/stream"  # the WebSocket, served by websocket_stream ahead of the routing
MAX_CURSOR = 2**63 - 1  # the cursor is a PostgreSQL bigint
BAD_CURSOR = "the cursor must be an integer from 0 to 2^63-1"
Since = Annotated[int | None, Query(ge=0, le=MAX_CURSOR, description="Resume after this cursor")]
Token = Annotated[str | None, Query(description="User token (for clients without headers)")]


def _verified(runtime: Runtime, token: str | None) -> UserToken | None:
    if not token:
        return None
    try:
        return verify_user_claims(runtime.settings, token)
    except AuthError:
        return None


def _subscriber(runtime: Runtime, token: str | None, authorization: str | None) -> UserToken | None:
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:]
    return _verified(runtime, token)


def cursor_of(text: str | None) -> int | None:
    """A cursor sent as text (``since``, ``Last-Event-ID``); ValueError if it is not one."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_CURSOR):
        raise ValueError(BAD_CURSOR)
    return int(text)


def _origin_allowed(runtime: Runtime, origin: str | None) -> bool:
    allowed = runtime.settings.stream_origins
    return origin is None or "*" in allowed or origin in allowed


# The close code of a connect refused by a rate limit, where the server cannot answer the
# handshake with a 429 (4000-4999: the application's own; 4429 mirrors HTTP's 429).
RATE_LIMITED = 4429


async def _refuse(scope, send, status: int, slug: str, detail: str, headers=None) -> None:
    # An HTTP answer on the handshake where the server supports it; otherwise close 1008
    # (4429 for a rate limit).
    if "websocket.http.response" in scope.get("extensions", {}):
        response = problem_response(status, slug, detail, headers=headers)
        start = {"status": status, "headers": response.raw_headers}
        await send({"type": "websocket.http.response.start", **start})
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        code = RATE_LIMITED if status == 429 else 1008
        await send({"type": "websocket.close", "code": code, "reason": detail[:120]})


async def _admit(app, scope, me: UserToken | None) -> None:
    """Count a failed authentication of the client's address (``me`` None), or a connect of
    the user; a 429 :class:`Problem` when either is over its limit."""
    gate, address = app.state.failure_gate, client_address(scope)
    if me is None:
        await anyio.to_thread.run_sync(gate.failed, address)
        return
    gate.check(address)
    limit = app.state.runtime.settings.stream_connect_rate_limit
    await app.state.stream_connects.get((limit, me.subject))


def count_connects(limiter: RateLimiter, asks: Sequence[tuple[str, str]]) -> list[Problem | None]:
    """Count a batch of connects (limit, user) against their limits, in one thread and one
    round trip: a herd after a restart would otherwise queue a thread hop and a round trip
    per connect."""
    checks = [Check(limit, STREAM_CONNECT, (subject,)) for limit, subject in asks]
    try:
        refusals = limiter.limits.hit_each(checks)
    except LimitsUnavailable:
        raise unavailable("rate limit store") from None
    return [None if r is None else refuse(r) for r in refusals]


def _handshake(runtime: Runtime, scope) -> tuple[UserToken | None, int | None, tuple | None]:
    """(token, since, refusal): who connects from where, or why they may not."""
    origin = authorization = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    query = parse_qs(scope["query_string"].decode("latin-1"))
    if not _origin_allowed(runtime, origin):
        return None, None, (403, "forbidden", "This origin may not connect.")
    try:
        since = cursor_of(query.get("since", [None])[-1])
    except ValueError:
        return None, None, (422, "validation-error", f"since: {BAD_CURSOR}.")
    me = _subscriber(runtime, query.get("token", [None])[-1], authorization)
    if me is None or me.expires_at <= time.time():  # no leeway: it would close at once
        return None, None, (401, "unauthorized", "A valid user token is required.")
    return me, since, None


async def websocket_stream(app, scope, receive, send) -> None:
    """``/v1/me/stream`` as a raw ASGI app, dispatched before FastAPI's routing (app.py).

    A held connection costs only this coroutine and a :class:`Connection`: the hub sends
    to it, and this loop only reads the client's frames until it leaves.
    """
    runtime: Runtime = app.state.runtime
    hub: Hub = app.state.hub
    await receive()  # websocket.connect
    me, since, refusal = _handshake(runtime, scope)
    conn = live = start = None
    try:
        try:
            if refusal is not None and refusal[0] == 401:
                await _admit(app, scope, None)
            elif me is not None:
                # Registered before its connect is counted and its start read, so that no
                # live event published meanwhile is missed; accepted once counted, so that
                # a refusal is still an answer to the handshake.
                conn = hub.hold(me.subject, send)
                start = await _counted_start(app, scope, me, since)
        except Problem as exc:
            refusal = (exc.status, exc.slug, exc.detail, exc.headers)
        if refusal is not None:
            await _refuse(scope, send, *refusal)
            return
        if conn is None or conn.closed:
            return  # closed while held (a shutdown): its close is sent
        await send({"type": "websocket.accept"})
        hub.begin(conn, since, me.expires_at, start)
        # Held as long as the stream, so without what only the start needed: its rows, the
        # token, and the handshake's headers and query string (which carry the token too).
        me = start = None
        scope["headers"], scope["query_string"] = (), b""
        live = metrics.STREAM_CONNECTIONS.labels("websocket")
        live.inc()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")  # binary frames carry no commands
            if text:
                _on_client_frame(runtime, conn, text)
    finally:
        if conn is not None:
            hub.unregister(conn)
        if live is not None:
            live.dec()


async def _counted_start(app, scope, me: UserToken, since: int | None) -> Start | Exception:
    """The connection's start, its connect counted first, in one batch with the other
    connects arriving now; a 429 or 503 :class:`Problem` when refused. An error reading
    the start is returned: the stream is accepted, then closed with 1011 (live_hub)."""
    app.state.failure_gate.check(client_address(scope))
    limit = app.state.runtime.settings.stream_connect_rate_limit
    try:
        start = await app.state.hub.starts.get((me.subject, since, limit))
    except LimitsUnavailable:
        raise unavailable("rate limit store") from None
    except Exception as exc:  # noqa: BLE001
        return exc
    if isinstance(start, Refusal):
        raise refuse(start)
    return start


def _on_client_frame(runtime: Runtime, conn: Connection, frame: str) -> None:
    """Clients may send ``{"type": "resume", "cursor": N}`` and ``{"type": "auth",
    "token": T}``. A bad one of these closes the stream; anything else is ignored."""
    try:
        message = json.loads(frame)
        kind = message.get("type")
    except (ValueError, AttributeError, RecursionError):  # RecursionError: [[[[…
        log.debug("ignored a malformed frame from a %s connection", conn.recipient)
        return
    if kind == "resume":
        cursor = message.get("cursor")
        if type(cursor) is not int or not 0 <= cursor <= MAX_CURSOR:
            conn.close(REFUSED, f"resume: {BAD_CURSOR}")
        else:
            conn.control(RESUME, cursor)
    elif kind == "auth":
        _renew(runtime, conn, message.get("token"))


def _renew(runtime: Runtime, conn: Connection, token: object) -> None:
    """Extend the stream to a fresh token's end; it must be the same subscriber's."""
    fresh = _verified(runtime, token) if isinstance(token, str) else None
    if fresh is None or fresh.expires_at <= time.time():
        conn.close(EXPIRED, "reauth: the token is not valid; reconnect with a fresh token")
    elif fresh.subject != conn.recipient:
        conn.close(REFUSED, "auth: the token is another subscriber's")
    else:
        conn.expires_at(fresh.expires_at)


def _sse(text: str) -> str:
    event = json.loads(text)
    lines = []
    if event["type"] not in ("heartbeat", "resync", "reauth") and "cursor" in event:
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
    if me is None or me.expires_at <= time.time():
        await _admit(request.app, request.scope, None)
        raise Problem(401, "unauthorized", "A valid user token is required.")
    await _admit(request.app, request.scope, me)
    if last_event_id:
        try:
            since = cursor_of(last_event_id)
        except ValueError:
            raise Problem(422, "validation-error", f"Last-Event-ID: {BAD_CURSOR}.") from None
    # The same Connection as the WebSocket's, sending into a bounded queue that the
    # response drains: a full queue suspends send(), which puts it on the slow path.
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SSE_QUEUE)

    async def body():
        conn = hub.open(me.subject, queue.put, since, me.expires_at)
        live = metrics.STREAM_CONNECTIONS.labels("sse")
        live.inc()
        try:
            yield "retry: 2000\n\n"
            while (message := await queue.get())["type"] == "websocket.send":
                yield _sse(message["text"])
            kind = SSE_ENDINGS.get(message["code"], "reconnect")
            yield _sse(json.dumps({"type": kind, "reason": message["reason"]}))
        finally:
            hub.unregister(conn)
            live.dec()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
