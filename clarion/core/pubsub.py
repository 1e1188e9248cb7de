"""Live-event fan-out between workers and API processes, chosen by URL scheme.

Workers publish after commit; each API process holds one subscription (not one per
connection) and routes events to its connected clients by recipient. Events are a
convenience on top of the database: a lost event is recovered by resuming from a cursor.

Wire format: one message per batch of events (several past ``MESSAGE_BYTES``), one line
per event (``\n``-separated): a routing header, a tab, and the event as compact JSON. The
header is the JSON array ``[recipient, type, cursor]``; JSON never contains a raw tab or
newline, so both splits are exact. The gateway parses only the header of each line (most
events are for users connected elsewhere) and forwards the event's text as is to its
clients: a batch costs one pub/sub message, and no JSON encoding per connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Protocol
from urllib.parse import urlsplit

# The first item of every subscription, once it is live: events published from then on
# will arrive (subscribers use it to catch up on what they may have missed before).
SUBSCRIBED: dict[str, Any] = {"type": "subscribed"}

# Bounds one message (Redis drops a subscriber whose output buffer passes 32 MB, and the
# gateway handles a message in one go); a bigger batch is split into several messages.
MESSAGE_BYTES = 256 * 1024

# json.dumps with these options builds a new encoder per call; one shared encoder writes
# the same text (compact separators, str() for what JSON lacks) without that cost.
_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)


class Encoded(dict):
    """An event that carries its own wire line (routing header, tab, JSON text), made by
    whoever built it more cheaply than encoding the dict (``create.created_events``
    splices one text per content with each row's id, seq and recipient). The text must
    decode to the dict and the header must be :func:`_header`'s; :func:`encode` sends the
    line as is. Made as a dict, ``line`` set at once (no ``__init__`` of its own: a
    Python frame per event of a fan-out)."""

    __slots__ = ("line",)
    line: str

    @property
    def text(self) -> str:
        """The event's JSON text."""
        return self.line.partition("\t")[2]


def encode(events: list[dict[str, Any]]) -> list[str]:
    """The messages that carry ``events`` (see the wire format), up to MESSAGE_BYTES each."""
    messages: list[str] = []
    lines: list[str] = []
    size = 0
    dumps = _COMPACT.encode
    for event in events:
        line = event.line if type(event) is Encoded else _header(event) + "\t" + dumps(event)
        if lines and size + len(line) > MESSAGE_BYTES:
            messages.append("\n".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        messages.append("\n".join(lines))
    return messages


def compact(value: Any) -> str:
    """``value`` as the compact JSON the events are written in."""
    return _COMPACT.encode(value)


def _header(event: dict[str, Any]) -> str:
    """``[recipient, type, cursor]`` as JSON; by hand in the usual case (json.dumps' Python
    wrapper shows in the worker's CPU per fan-out: docs/benchmarks/code.md)."""
    recipient, kind, cursor = event.get("recipient"), event.get("type"), event.get("cursor")
    if type(recipient) is str and type(kind) is str and type(cursor) is int:
        return f"[{_quote(recipient)},{_quote(kind)},{cursor}]"
    return json.dumps([recipient, kind, cursor], default=str)


def decode(message: str | bytes) -> list[dict[str, Any]]:
    """The events of one message (for readers of the channel other than the gateway)."""
    if isinstance(message, bytes):
        message = message.decode()
    return [json.loads(line.partition("\t")[2]) for line in message.split("\n")]


def channel_for(url: str) -> str:
    """The event channel of a Redis URL.

    Redis pub/sub ignores the database number, so two deployments sharing one Redis on
    different databases would hear each other's events; the number is part of the name.
    """
    db = urlsplit(url).path.strip("/") or "0"
    return f"clarion:{db}:events"


class PubSub(Protocol):
    def publish_many(self, events: list[dict[str, Any]]) -> None: ...

    def subscribe(self) -> AsyncIterator[str | dict[str, Any]]:
        """SUBSCRIBED once live, then each message (see the module's wire format)."""

    def close(self) -> None: ...


class MemoryPubSub:
    """In-process fan-out for the embedded mode, where worker and API share one process."""

    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    def publish_many(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            targets = list(self._subscribers)
        if not targets or not events:
            return
        messages = encode(events)  # the same messages as Redis carries
        for loop, queue in targets:
            for message in messages:
                loop.call_soon_threadsafe(queue.put_nowait, message)

    async def subscribe(self) -> AsyncIterator[str | dict[str, Any]]:
        entry: tuple[asyncio.AbstractEventLoop, asyncio.Queue[str | dict[str, Any]]] = (
            asyncio.get_running_loop(),
            asyncio.Queue(),
        )
        with self._lock:
            self._subscribers.append(entry)
        try:
            yield SUBSCRIBED
            while True:
                yield await entry[1].get()
        finally:
            with self._lock:
                self._subscribers.remove(entry)

    def close(self) -> None:
        pass


class RedisPubSub:
    """Redis PUBLISH/SUBSCRIBE on one channel; one message per batch of events."""

    def __init__(self, url: str) -> None:
        import redis

        self._url = url
        self.channel = channel_for(url)
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def publish_many(self, events: list[dict[str, Any]]) -> None:
        """PUBLISH the batch as one message (several past MESSAGE_BYTES), one round trip.

        One message per batch rather than per event: each subscriber reads and parses one
        Redis reply for a whole fan-out (parsing one reply per event took nearly half the
        gateway's CPU: docs/benchmarks/code.md), and the worker packs one command.
        """
        if events:
            self.publish_messages(encode(events))

    def publish_messages(self, messages: list[str]) -> None:
        """PUBLISH messages made by :func:`encode`, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for message in messages:
            pipe.publish(self.channel, message)
        pipe.execute()

    async def subscribe(self) -> AsyncIterator[str | dict[str, Any]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self._url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)
        try:
            yield SUBSCRIBED
            async for message in pubsub.listen():
                yield message["data"].decode()
        finally:
            await pubsub.aclose()
            await client.aclose()

    def close(self) -> None:
        self._client.close()


BACKENDS: dict[str, Callable[[str], PubSub]] = {
    "memory": MemoryPubSub,
    "redis": RedisPubSub,
    "rediss": RedisPubSub,
}


def from_url(url: str) -> PubSub:
    scheme = urlsplit(url).scheme
    try:
        return BACKENDS[scheme](url)
    except KeyError:
        raise ValueError(f"no pub/sub backend for {scheme!r} (have: {sorted(BACKENDS)})") from None
