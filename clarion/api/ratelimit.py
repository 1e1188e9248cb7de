"""Rate limits for API endpoints, with the ``limits`` library.

A moving window per limit and key (usually the caller's id), kept where
``CLARION_REDIS_URL`` points: in Redis every API process counts the same hits, and with
``memory://`` (the embedded mode) the one process counts them. Over the limit, the caller
gets a 429 problem with ``Retry-After``, the seconds until the window lets one more in.

Use: ``limiter.check(settings.some_rate_limit, "scope", caller_id)`` at the top of an
endpoint, with ``limiter`` from :data:`LimiterDep`.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from clarion import metrics
from clarion.api.problems import Problem, unavailable

KEY_PREFIX = "clarion:ratelimit"


@functools.cache
def _item(limit: str) -> RateLimitItem:
    return parse(limit)


class RateLimiter:
    """Moving-window limits in the store of a ``redis://`` or ``memory://`` URL."""

    def __init__(self, url: str) -> None:
        options = {"key_prefix": KEY_PREFIX} if url.startswith("redis") else {}
        self.storage = storage_from_string(url, wrap_exceptions=True, **options)
        self.window = MovingWindowRateLimiter(self.storage)

    def check(self, limit: str, *keys: str) -> None:
        """Count one hit of ``keys`` against ``limit`` ("5/minute"); a 429 problem with
        Retry-After when it is over, a 503 when the store cannot be reached."""
        item = _item(limit)
        try:
            if self.window.hit(item, *keys):
                return
            stats = self.window.get_window_stats(item, *keys)
        except StorageError:
            raise unavailable("rate limit store") from None
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        metrics.rate_limited(keys[0] if keys else limit)  # the scope, never the caller
        raise Problem(
            429,
            "rate-limited",
            f"Too many requests: at most {item.amount} per {item.get_expiry()} s. "
            f"Try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )


def get_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
