"""Counting against rate limits and quotas, with the ``limits`` library.

One store per process, where ``CLARION_REDIS_URL`` points: with Redis every API process
and worker counts the same hits (each check is one atomic script, so concurrent callers
never both take the last unit), and with ``memory://`` (the embedded mode) the one
process counts them. Nothing here speaks HTTP: :mod:`clarion.api.ratelimit` turns a
:class:`Refusal` into a 429, and routing (:mod:`clarion.core.throttle`) into a decision.

Two strategies, both check-then-consume (a refused hit costs nothing):

- ``moving``: the exact moving window (a list of hit times per key, at most ``amount``
  long): request rates, where windows are short and amounts small.
- ``sliding``: the sliding window counter (two counters per key, O(1) whatever the
  amount): daily quotas of recipients, where one fan-out may cost thousands.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

KEY_PREFIX = "clarion:ratelimit"
MOVING, SLIDING = "moving", "sliding"


class LimitsUnavailable(Exception):
    """The store of the counters cannot be reached."""


@functools.cache
def item(limit: str) -> RateLimitItem:
    """``"5/minute"`` parsed once (settings and per-key overrides repeat)."""
    return parse(limit)


def per_day(amount: int) -> str:
    return f"{amount}/day"


@dataclass(frozen=True)
class Refusal:
    """Why a hit was refused: which limit (``name``, e.g. ``api-key``), its amount per
    window, and the seconds until it lets ``cost`` more in (at least 1)."""

    name: str
    amount: int
    window_seconds: int
    retry_after: int
    remaining: int


class Limits:
    """The counters in the store of a ``redis://`` or ``memory://`` URL."""

    def __init__(self, url: str) -> None:
        options = {"key_prefix": KEY_PREFIX} if url.startswith("redis") else {}
        self.storage = storage_from_string(url, wrap_exceptions=True, **options)
        self._strategies = {
            MOVING: MovingWindowRateLimiter(self.storage),
            SLIDING: SlidingWindowCounterRateLimiter(self.storage),
        }

    def hit(
        self, limit: str, name: str, *keys: str, cost: int = 1, strategy: str = MOVING
    ) -> Refusal | None:
        """Count ``cost`` hits of (``name``, ``keys``) against ``limit``; None when they fit,
        else a :class:`Refusal` (nothing counted). One round trip when they fit."""
        parsed, window = item(limit), self._strategies[strategy]
        try:
            if window.hit(parsed, name, *keys, cost=cost):
                return None
            stats = window.get_window_stats(parsed, name, *keys)
        except StorageError:
            raise LimitsUnavailable(name) from None
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        return Refusal(name, parsed.amount, parsed.get_expiry(), wait, max(0, stats.remaining))

    def clear(self, limit: str, name: str, *keys: str, strategy: str = MOVING) -> None:
        self._strategies[strategy].clear(item(limit), name, *keys)
