"""Counting against rate limits and quotas, with the ``limits`` library.

One store per process, where ``CLARION_REDIS_URL`` points: with Redis every API process
and worker counts the same hits (one atomic script per request, whatever the number of
limits it passes, so concurrent callers never both take the last unit; see
:mod:`clarion.core.ratelimit_script` for why that script is ours), and with ``memory://``
(the embedded mode) the one process counts them with the library's own calls. Nothing
here speaks HTTP: :mod:`clarion.api.ratelimit` turns a :class:`Refusal` into a 429, and
routing (:mod:`clarion.core.throttle`) into a decision.

Two strategies, both check-then-consume (a refused hit costs nothing):

- ``moving``: the exact moving window (a list of hit times per key, at most ``amount``
  long): request rates, where windows are short and amounts small.
- ``sliding``: the sliding window counter (two counters per key, O(1) whatever the
  amount): daily quotas of recipients, where one fan-out may cost thousands.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from redis.exceptions import NoScriptError, RedisError

from clarion.core.ratelimit_script import SCRIPT

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


@dataclass(frozen=True)
class Check:
    """One limit to count a hit against: ``limit`` ("5/minute"), the counter's ``name`` and
    ``keys``, the ``cost`` in units, and the ``strategy``."""

    limit: str
    name: str
    keys: tuple[str, ...]
    cost: int = 1
    strategy: str = MOVING


@dataclass(frozen=True)
class Standing:
    """Where a limit stands after a hit that fitted: ``remaining`` units in the window,
    and ``reset`` seconds until it resets (the ``RateLimit`` field's ``t``)."""

    name: str
    amount: int
    window_seconds: int
    remaining: int
    reset: int


class Limits:
    """The counters in the store of a ``redis://`` or ``memory://`` URL."""

    def __init__(self, url: str) -> None:
        options = {"key_prefix": KEY_PREFIX} if url.startswith("redis") else {}
        self.storage = storage_from_string(url, wrap_exceptions=True, **options)
        self._strategies = {
            MOVING: MovingWindowRateLimiter(self.storage),
            SLIDING: SlidingWindowCounterRateLimiter(self.storage),
        }
        self._script: Any = None
        if isinstance(self.storage, RedisStorage):
            # EVALSHA in a pipeline (hit_groups), loaded again after a Redis restart (NOSCRIPT).
            self._redis_storage = self.storage
            self._script = self.storage.get_connection().register_script(SCRIPT.encode())
        self._lock = threading.Lock()  # memory:// only: test-then-hit of several limits

    def hit(
        self, limit: str, name: str, *keys: str, cost: int = 1, strategy: str = MOVING
    ) -> Refusal | None:
        """Count ``cost`` hits of (``name``, ``keys``) against ``limit``; None when they fit,
        else a :class:`Refusal` (nothing counted). One round trip."""
        refusal, _ = self.hit_all(Check(limit, name, keys, cost, strategy))
        return refusal

    def hit_all(self, *checks: Check) -> tuple[Refusal | None, list[Standing]]:
        """Count every check's hit, all or nothing: (None, where each stands) when they all
        fit, else (the first refusal, []) and nothing counted. One round trip to Redis
        whatever the number of checks, atomic under concurrency."""
        return self.hit_groups([checks])[0]

    def hit_groups(
        self, groups: list[tuple[Check, ...]]
    ) -> list[tuple[Refusal | None, list[Standing]]]:
        """:meth:`hit_all` for each group of checks (a request's), all or nothing per
        group; with Redis one round trip for all of them (a pipeline of the script)."""
        if not groups:
            return []
        try:
            if self._script is None:
                with self._lock:
                    return [self._memory(checks) for checks in groups]
            calls = [self._script_args(checks) for checks in groups]
            for _ in range(2):  # again once after NOSCRIPT (a restarted Redis)
                pipe = self._script.registered_client.pipeline(transaction=False)
                for keys, args in calls:
                    pipe.evalsha(self._script.sha, len(keys), *keys, *args)
                results = pipe.execute(raise_on_error=False)
                if not any(isinstance(r, NoScriptError) for r in results):
                    break
                self._script.sha = self._script.registered_client.script_load(self._script.script)
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return [self._outcome(c, r) for c, r in zip(groups, results, strict=True)]
        except (StorageError, RedisError, OSError):
            raise LimitsUnavailable(groups[0][0].name if groups[0] else "") from None

    def hit_each(self, checks: Sequence[Check]) -> list[Refusal | None]:
        """:meth:`hit` of each check, each fitting or not by itself, in one round trip to
        Redis (a herd of connects counted together, api/routers/live.py)."""
        return [refusal for refusal, _ in self.hit_groups([(check,) for check in checks])]

    def _script_args(self, checks) -> tuple[list[str], list[Any]]:
        prefixed = self._redis_storage.prefixed_key
        keys: list[str] = []
        args: list[Any] = [time.time()]
        for check in checks:
            parsed = item(check.limit)
            key = parsed.key_for(check.name, *check.keys)
            if check.strategy == MOVING:
                keys.append(prefixed(key))
            else:  # the limits layout: "{key}/-1" and "{key}" (one Redis Cluster slot)
                keys.append(prefixed(f"{{{key}}}/-1"))
                keys.append(prefixed(f"{{{key}}}"))
            kind = "m" if check.strategy == MOVING else "s"
            args += [kind, parsed.amount, parsed.get_expiry(), check.cost]
        return keys, args

    @staticmethod
    def _outcome(checks, answer) -> tuple[Refusal | None, list[Standing]]:
        refused, *rest = answer
        if refused:
            check = checks[refused - 1]
            remaining, ms = rest[2 * refused - 2 : 2 * refused]
            parsed = item(check.limit)
            wait = max(1, math.ceil(int(ms) / 1000))
            return Refusal(check.name, parsed.amount, parsed.get_expiry(), wait, int(remaining)), []
        return None, [
            Standing(
                c.name,
                item(c.limit).amount,
                item(c.limit).get_expiry(),
                max(0, int(rest[2 * i]) - c.cost),
                max(0, math.ceil(int(rest[2 * i + 1]) / 1000)),
            )
            for i, c in enumerate(checks)
        ]

    def _memory(self, checks) -> tuple[Refusal | None, list[Standing]]:
        # One process, no round trips: the library's calls, under a lock for all or nothing.
        for check in checks:
            parsed, window = item(check.limit), self._strategies[check.strategy]
            if not window.test(parsed, check.name, *check.keys, cost=check.cost):
                stats = window.get_window_stats(parsed, check.name, *check.keys)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                remaining = max(0, stats.remaining)
                return Refusal(check.name, parsed.amount, parsed.get_expiry(), wait, remaining), []
        standings = []
        for check in checks:
            parsed, window = item(check.limit), self._strategies[check.strategy]
            window.hit(parsed, check.name, *check.keys, cost=check.cost)
            stats = window.get_window_stats(parsed, check.name, *check.keys)
            reset = max(0, math.ceil(stats.reset_time - time.time()))
            standings.append(
                Standing(check.name, parsed.amount, parsed.get_expiry(), stats.remaining, reset)
            )
        return None, standings

    def clear(self, limit: str, name: str, *keys: str, strategy: str = MOVING) -> None:
        self._strategies[strategy].clear(item(limit), name, *keys)
