"""Pure ASGI guards in front of the routing: request body limits and security headers.

They run before FastAPI reads anything, so a request that cannot be served costs a few
headers' worth of work: a body is counted as it arrives and refused the moment it passes
the limit, and a body sent to an authenticated route without a usable bearer credential
is refused before it is read at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastapi.routing import APIRoute
from starlette.routing import Match

from clarion.api import problems
from clarion.api.deps import requires_bearer
from clarion.core.auth import MAX_TOKEN_BYTES

# RFC 6750 b64token, within the token bound: anything else cannot be a credential.
_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +[A-Za-z0-9\-._~+/]+=*")
_CLOSE = {"Connection": "close"}  # what is left of the body is never read

# What HTML pages may load: nothing but their own inline styles and a form posting back
# to themselves, and no page may frame them.
HTML_POLICY = {
    "default-src": "'none'",
    "style-src": "'unsafe-inline'",
    "img-src": "'self'",
    "form-action": "'self'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
}


def content_security_policy(**directives: str | None) -> str:
    """The CSP of an HTML page: :data:`HTML_POLICY` with ``directives`` changed
    (``script_src="'self'"`` sets ``script-src``; ``None`` removes one). Pages that
    need more than inline styles (e.g. a UI with scripts) send their own header built
    here; the middleware only adds the default where a page set none."""
    policy = dict(HTML_POLICY)
    for name, value in directives.items():
        key = name.replace("_", "-")
        if value is None:
            policy.pop(key, None)
        else:
            policy[key] = value
    return "; ".join(f"{k} {v}" for k, v in policy.items())


class BodyLimit:
    """Request bodies of at most ``max_bytes``, however they are sent (pure ASGI).

    A declared ``Content-Length`` over the limit is refused at once. A body of unknown
    length (chunked) is counted chunk by chunk: past the limit the application is told
    the client left, so it never takes a cut body as complete, and the client gets the
    413. Both answers close the connection, so the rest of the body is never read.
    A body sent to a route that needs a bearer credential, without one that could be
    valid, gets its 401 before any of it is read.
    """

    def __init__(self, app, max_bytes: int, routes: Iterable = ()) -> None:
        self.app, self.max_bytes = app, max_bytes
        self._bearer_routes = [
            r for r in routes if isinstance(r, APIRoute) and requires_bearer(r.dependant)
        ]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked, authorization = _framing(scope["headers"])
        if length is not None and length > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        if (chunked or length) and not _usable_bearer(authorization) and self._needs_bearer(scope):
            await problems.problem_response(
                401,
                "unauthorized",
                "A bearer credential is required: Authorization: Bearer <key or token>.",
                headers={"WWW-Authenticate": "Bearer", **_CLOSE},
            )(scope, receive, send)
            return
        if not chunked:
            # The server delivers exactly Content-Length bytes: nothing to count.
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope, receive, send) -> None:
        received, exceeded, started = 0, False, False

        async def counted_receive():
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the application's answer to a body it never got whole
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send) -> None:
        detail = f"Request bodies are limited to {self.max_bytes} bytes."
        response = problems.problem_response(413, "body-too-large", detail, headers=_CLOSE)
        await response(scope, receive, send)

    def _needs_bearer(self, scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self._bearer_routes)


def _framing(headers) -> tuple[int | None, bool, bytes | None]:
    """(Content-Length, whether the length is unknown, Authorization) of a request."""
    length, chunked, authorization = None, False, None
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"authorization":
            authorization = value
    return length, chunked, authorization


def _usable_bearer(value: bytes | None) -> bool:
    return (
        value is not None
        and len(value) <= MAX_TOKEN_BYTES + 16
        and _BEARER.fullmatch(value) is not None
    )


class SecurityHeaders:
    """Headers every answer carries (pure ASGI).

    ``X-Content-Type-Options: nosniff`` everywhere; ``Cache-Control: no-store`` on
    answers to requests that carry a credential (an Authorization header or a
    ``token`` parameter), so no cache keeps someone's inbox; on HTML pages a CSP that
    forbids framing (unless the page set its own) and ``Referrer-Policy: no-referrer``,
    so a signed link in the address bar never leaks through a Referer.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.default_csp = content_security_policy().encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = _has_credential(scope)

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._headers(list(message.get("headers", ())), private)
            await send(message)

        await self.app(scope, receive, with_headers)

    def _headers(self, headers: list, private: bool) -> list:
        names = {name.lower(): value for name, value in headers}
        if b"x-content-type-options" not in names:
            headers.append((b"x-content-type-options", b"nosniff"))
        if private:
            headers = [(n, v) for n, v in headers if n.lower() != b"cache-control"]
            headers.append((b"cache-control", b"no-store"))
        if names.get(b"content-type", b"").startswith(b"text/html"):
            if b"content-security-policy" not in names:
                headers.append((b"content-security-policy", self.default_csp))
            headers.append((b"referrer-policy", b"no-referrer"))
            headers.append((b"x-frame-options", b"DENY"))
        return headers


def _has_credential(scope) -> bool:
    if any(name == b"authorization" for name, _ in scope["headers"]):
        return True
    query = scope.get("query_string", b"")
    return query.startswith(b"token=") or b"&token=" in query
