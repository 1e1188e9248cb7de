"""Rate limits and quotas of the API: 429 problems with ``Retry-After`` and the IETF
``RateLimit`` / ``RateLimit-Policy`` fields (draft-ietf-httpapi-ratelimit-headers-10).

The counting is :mod:`clarion.core.ratelimits` (the ``limits`` library, in Redis or in
memory); this module decides what to count and answers. Every refusal passes through
:func:`refuse`, the one place to observe 429s (a metrics counter, a log line).

The limits (docs/operations/rate-limits.md):

- ``api-key``: requests per API key per window (``CLARION_API_KEY_RATE_LIMIT`` or the
  key's own), checked in :func:`clarion.api.deps.authorize`;
- ``daily-quota``: recipients per API key per day (``CLARION_API_KEY_DAILY_QUOTA`` or the
  key's own), checked when a send is accepted;
- ``user``: requests per end user (``CLARION_USER_RATE_LIMIT``), ``stream-connect``:
  live-stream connects per end user (``CLARION_STREAM_CONNECT_RATE_LIMIT``),
  ``test-notification``;
- ``auth-failures``: failed authentications per client address
  (``CLARION_AUTH_FAILURE_RATE_LIMIT``), see :class:`FailureGate`.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import Depends, Request

from clarion import metrics
from clarion.api.problems import Problem, unavailable
from clarion.core.ratelimits import (
    MOVING,
    Check,
    Limits,
    LimitsUnavailable,
    Refusal,
    Standing,
)

API_KEY, DAILY_QUOTA, USER, STREAM_CONNECT = "api-key", "daily-quota", "user", "stream-connect"
AUTH_FAILURES = "auth-failures"
# What the refused limit counts, for the problem's detail.
UNITS = {DAILY_QUOTA: "recipients"}


def standing_headers(standings: list[Standing]) -> dict[str, str]:
    """The draft-10 fields of a request that fitted: one list item per limit it passed."""
    return {
        "RateLimit-Policy": ", ".join(
            f'"{s.name}";q={s.amount};w={s.window_seconds}' for s in standings
        ),
        "RateLimit": ", ".join(f'"{s.name}";r={s.remaining};t={s.reset}' for s in standings),
    }


def headers(refusal: Refusal) -> dict[str, str]:
    """``Retry-After`` (RFC 9110) and the draft-10 structured fields for one policy."""
    name = refusal.name
    return {
        "Retry-After": str(refusal.retry_after),
        "RateLimit-Policy": f'"{name}";q={refusal.amount};w={refusal.window_seconds}',
        "RateLimit": f'"{name}";r={refusal.remaining};t={refusal.retry_after}',
    }


def refuse(refusal: Refusal) -> Problem:
    """The 429 problem for a refusal. Every 429 of the API is made here."""
    unit = UNITS.get(refusal.name, "requests")
    metrics.rate_limited(refusal.name)
    return Problem(
        429,
        "rate-limited",
        f"Rate limit {refusal.name!r}: at most {refusal.amount} {unit} per "
        f"{refusal.window_seconds} s. Try again in {refusal.retry_after} s.",
        headers=headers(refusal),
        limit=refusal.name,
    )


class RateLimiter:
    """The API's view of the counters: a 429 problem when over, a 503 when the store is
    unreachable (nothing is accepted without being counted)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def check(
        self,
        limit: str,
        name: str,
        *keys: str,
        cost: int = 1,
        strategy: str = MOVING,
        request: Request | None = None,
    ) -> None:
        """Count ``cost`` hits of (``name``, ``keys``) against ``limit`` ("5/minute")."""
        self.check_all(Check(limit, name, keys, cost, strategy), request=request)

    def check_all(self, *checks: Check, request: Request | None = None) -> None:
        """Count every check's hit in one round trip, all or nothing; where each stands is
        noted on ``request`` for the response's ``RateLimit`` fields."""
        if not checks:
            return
        try:
            refusal, standings = self.limits.hit_all(*checks)
        except LimitsUnavailable:
            raise unavailable("rate limit store") from None
        if refusal is not None:
            raise refuse(refusal)
        note(request, standings)

    def count(self, groups: list[tuple[Check, ...]]) -> list[list[Standing] | Problem]:
        """Count several requests' checks in one round trip, all or nothing per request:
        where each one's limits stand, or its 429 or 503 (the coalescer's ``count``)."""
        try:
            hits = self.limits.hit_groups(groups)
        except LimitsUnavailable:
            return [unavailable("rate limit store") for _ in groups]
        return [standings if refusal is None else refuse(refusal) for refusal, standings in hits]


def note(request: Request | None, standings: list[Standing]) -> None:
    """Where a request's limits stand, for its response's ``RateLimit`` fields."""
    if request is not None and standings:
        noted = request.scope.setdefault("state", {}).setdefault(STATE, {})
        noted.update((s.name, s) for s in standings)


STATE = "clarion.ratelimit"


class RateLimitHeaders:
    """Adds the ``RateLimit`` / ``RateLimit-Policy`` fields of the limits a request passed
    (noted by :meth:`RateLimiter.check_all`) to its response, unless it has its own (a
    429's). Pure ASGI: it only touches the response start."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def start(message) -> None:
            if message["type"] == "http.response.start" and state.get(STATE):
                names = {name.lower() for name, _ in message.get("headers", ())}
                if b"ratelimit" not in names:
                    fields = standing_headers(list(state[STATE].values()))
                    extra = [(k.lower().encode(), v.encode()) for k, v in fields.items()]
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, start)


class FailureGate:
    """Failed authentications per client address, so guessing keys and tokens is slow.

    Only failures are counted: a good key or token never touches the store. An address
    over the limit gets 429 for its failures, and this process then refuses every request
    from it that carries credentials, good or bad, until the window lets it in again
    (``blocked``; without that, a lucky guess would still get through). Other processes
    learn the same at their own next failure from it.
    """

    def __init__(self, limiter: RateLimiter, limit: str | None) -> None:
        self.limiter, self.limit = limiter, limit
        self._blocked: dict[str, tuple[float, Refusal]] = {}
        self._lock = threading.Lock()

    def check(self, address: str | None) -> None:
        """429 while ``address`` is blocked here (no store round trip)."""
        if not address or not self._blocked:
            return
        with self._lock:
            entry = self._blocked.get(address)
            if entry is not None and entry[0] <= time.monotonic():
                del self._blocked[address]
                entry = None
        if entry is not None:
            until, refusal = entry
            wait = max(1, round(until - time.monotonic()))
            raise refuse(Refusal(**{**refusal.__dict__, "retry_after": wait}))

    def failed(self, address: str | None) -> None:
        """Count one failure of ``address``; 429 (and blocked here) when over the limit."""
        if not address or self.limit is None:
            return
        try:
            refusal = self.limiter.limits.hit(self.limit, AUTH_FAILURES, address)
        except LimitsUnavailable:
            return  # the 401 stands: an outage of the store must not turn into 503s here
        if refusal is None:
            return
        with self._lock:
            if len(self._blocked) > 10_000:
                self._blocked.clear()
            self._blocked[address] = (time.monotonic() + refusal.retry_after, refusal)
        raise refuse(refusal)


def client_address(request_or_scope) -> str | None:
    """The client's address (behind a proxy, what uvicorn's ``--forwarded-allow-ips`` made
    of ``X-Forwarded-For``)."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    client = scope.get("client")
    return client[0] if client else None


async def get_limiter(request: Request) -> RateLimiter:  # async: no thread hop (deps.py)
    return request.app.state.rate_limiter


async def get_failure_gate(request: Request) -> FailureGate:
    return request.app.state.failure_gate


LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
FailureGateDep = Annotated[FailureGate, Depends(get_failure_gate)]
