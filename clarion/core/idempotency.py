"""``Idempotency-Key`` store: the same key and body replay the first answer for 24 hours.

Keyed by the redis URL scheme like the pub/sub backend: Redis shares keys between API
processes; memory:// serves the single-process embedded mode. A key is claimed atomically
before anything is enqueued, so two concurrent requests with one key enqueue once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

Outcome = Literal["claimed", "replay", "mismatch", "in_progress"]


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    response: dict[str, Any] | None = None


def _decide(stored: dict[str, Any], fingerprint: str) -> Claim:
    if stored["fingerprint"] != fingerprint:
        return Claim("mismatch")
    if stored.get("response") is None:
        return Claim("in_progress")
    return Claim("replay", stored["response"])


class IdempotencyStore(Protocol):
    def claim(self, key: str, fingerprint: str) -> Claim: ...

    def complete(self, key: str, fingerprint: str, response: dict[str, Any]) -> None: ...

    def release(self, key: str) -> None: ...


class RedisIdempotencyStore:
    def __init__(self, url: str, ttl: int) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        self._ttl = ttl

    def _key(self, key: str) -> str:
        return f"clarion:idem:{key}"

    def claim(self, key: str, fingerprint: str) -> Claim:
        pending = json.dumps({"fingerprint": fingerprint})
        if self._redis.set(self._key(key), pending, nx=True, ex=self._ttl):
            return Claim("claimed")
        raw = self._redis.get(self._key(key))
        if raw is None:  # expired between the two calls
            return self.claim(key, fingerprint)
        return _decide(json.loads(raw), fingerprint)

    def complete(self, key: str, fingerprint: str, response: dict[str, Any]) -> None:
        value = json.dumps({"fingerprint": fingerprint, "response": response})
        self._redis.set(self._key(key), value, ex=self._ttl)

    def release(self, key: str) -> None:
        self._redis.delete(self._key(key))


class MemoryIdempotencyStore:
    # Expired keys are dropped every this many claims (Redis expires its own).
    PRUNE_EVERY = 1024

    def __init__(self, url: str, ttl: int) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}
        self._claims = 0

    def claim(self, key: str, fingerprint: str) -> Claim:
        now = time.monotonic()
        with self._lock:
            self._claims += 1
            if self._claims % self.PRUNE_EVERY == 0:
                self._items = {k: v for k, v in self._items.items() if v[0] >= now}
            found = self._items.get(key)
            if found is None or found[0] < now:
                self._items[key] = (now + self._ttl, {"fingerprint": fingerprint})
                return Claim("claimed")
            return _decide(found[1], fingerprint)

    def complete(self, key: str, fingerprint: str, response: dict[str, Any]) -> None:
        with self._lock:
            expires = time.monotonic() + self._ttl
            self._items[key] = (expires, {"fingerprint": fingerprint, "response": response})

    def release(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


STORES: dict[str, Callable[[str, int], IdempotencyStore]] = {
    "memory": MemoryIdempotencyStore,
    "redis": RedisIdempotencyStore,
    "rediss": RedisIdempotencyStore,
}


def from_url(url: str, ttl: int) -> IdempotencyStore:
    scheme = urlsplit(url).scheme
    try:
        return STORES[scheme](url, ttl)
    except KeyError:
        raise ValueError(f"no idempotency store for {scheme!r}") from None
