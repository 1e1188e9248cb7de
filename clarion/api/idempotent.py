"""``Idempotency-Key`` for anything that creates: the same key and body within the TTL
give the first answer again, and create nothing twice.

One flow for every caller (``POST /v1/notifications``, ``POST /v1/schedules`` and the MCP
tools that call them), over the store in :mod:`clarion.core.idempotency`. Keys are scoped
to the API key that used them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from clarion.api.problems import Problem, unavailable
from clarion.core import enqueue
from clarion.core.auth import Principal

log = logging.getLogger(__name__)


def _claim(runtime, key: str, fingerprint: str) -> dict[str, Any] | None:
    """Claim the key: None to go on, or the stored answer to replay; 409 on misuse."""
    try:
        claim = runtime.idempotency.claim(key, fingerprint)
    except RedisError:
        raise unavailable("idempotency store") from None
    if claim.outcome == "replay":
        return claim.response
    if claim.outcome == "mismatch":
        raise Problem(
            409,
            "idempotency-key-reused",
            "This Idempotency-Key was used with a different request body.",
        )
    if claim.outcome == "in_progress":
        raise Problem(
            409,
            "idempotency-key-in-progress",
            "A request with this Idempotency-Key is still being processed.",
            headers={"Retry-After": "1"},
        )
    return None


def once(
    runtime,
    principal: Principal,
    idempotency_key: str | None,
    body: dict[str, Any],
    make: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """``make()``'s answer and False, or the first answer for this key and True.

    If ``make`` fails, nothing was accepted and the key is released for the retry."""
    if idempotency_key is None:
        return make(), False
    key = f"{principal.key_id}:{idempotency_key}"
    fingerprint = enqueue.fingerprint(body)
    if (replay := _claim(runtime, key, fingerprint)) is not None:
        return replay, True
    try:
        answer = make()
    except BaseException:
        runtime.idempotency.release(key)
        raise
    try:
        runtime.idempotency.complete(key, fingerprint, answer)
    except RedisError:
        # Accepted all the same; a retry with this key gets "in progress" (409), never a
        # second one, until the key expires.
        log.warning("could not store the answer of an idempotency key")
    return answer, False
