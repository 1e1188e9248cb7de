"""The request id: ``X-Request-ID`` when the caller sent a sane one, else a new one; bound
to every log line the request causes (in this process and, through the task message, in
the worker) and returned on every answer, errors and the server's own 500 included.

A header is taken only when it is short and of safe characters (so a log line or a log
query cannot be forged or flooded with it) and holds nothing that looks like a secret.
"""

from __future__ import annotations

import re
import uuid

from clarion import logs

HEADER = b"x-request-id"
MAX_LENGTH = 128
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]*")


def sane(value: str | None) -> str | None:
    """``value`` if it can be a request id, else None."""
    if not value or len(value) > MAX_LENGTH or not _SANE.fullmatch(value):
        return None
    return value if logs.redact(value) == value else None


def of_scope(scope) -> str:
    """The request id of an ASGI connection: its sane header, or a new UUID."""
    for name, raw in scope.get("headers", ()):
        if name == HEADER:
            found = sane(raw.decode("latin-1"))
            if found:
                return found
            break
    return str(uuid.uuid4())


def bind(scope, send):
    """Bind the request id of an HTTP or WebSocket connection to the log context, and keep
    it in ``scope["state"]``; (the token for :func:`clarion.logs.unbind`, the ``send`` to
    use: on HTTP, one that returns it as ``X-Request-ID``). Not a wrapping coroutine: a
    held WebSocket would keep its frame for its whole life (docs/benchmarks/stream.md)."""
    request_id = of_scope(scope)
    scope.setdefault("state", {})["request_id"] = request_id
    if scope["type"] == "http":
        send = _with_id(send, request_id)
    return logs.bind(request_id=request_id), send


def _with_id(send, request_id: str):
    header = (HEADER, request_id.encode())

    async def send_with_id(message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0].lower() != HEADER]
            message = {**message, "headers": [*headers, header]}
        await send(message)

    return send_with_id
