"""One client's live stream: its cursor, its fast path and its slow path.

A :class:`Connection` has no task of its own while it keeps up: the hub
(:mod:`clarion.api.live_hub`) offers it each live event, and one that is its next cursor
goes straight to its ASGI ``send`` (which does not suspend while the transport takes data),
forwarding the published JSON text as is. Everything else takes the slow path: a bounded
queue drained by a short-lived task, which runs the start (replay and unread count), fills
gaps from the database, applies resume messages and waits for a transport that stopped
taking data. When the queue is empty, the connection is back on the fast path. A client
too slow to keep up is closed with "resync" instead of slowing anyone else down. Each
connection has one timer handle, for the moment its token stops being valid (an ``auth``
message from the client moves it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from clarion.api import frames
from clarion.api.batch import Batcher
from clarion.core import inbox, replay
from clarion.core.replay import GAP, SEND
from clarion.runtime import Runtime

log = logging.getLogger(__name__)
Event = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Close codes: 1008 refused (a bad message), 1011 internal error, 1012 service restart
# (reconnect elsewhere), 4000 resync (refetch, then reconnect), 4001 replaced by a newer
# connection of the same user, 4401 the token expired (reconnect with a fresh one).
REFUSED, ERROR, RESTART, RESYNC, REPLACED, EXPIRED = 1008, 1011, 1012, 4000, 4001, 4401
TOO_SLOW = "resync: too far behind; refetch the inbox and reconnect"
REAUTH = "reauth: the token expired; reconnect with a fresh token"

# Slow-path items other than live events, each queued as (marker, argument).
START, RESUME, CATCH_UP = "start", "resume", "catch-up"


class Owner(Protocol):
    """What a connection needs of its hub."""

    runtime: Runtime
    buffer: int  # the slow path's queue holds at most this many items
    starts: Batcher  # reads the starts of the connections starting together


def text_of(event: Event) -> str:
    """An event as the clients get it (the same encoding as pub/sub messages)."""
    return json.dumps(event, separators=(",", ":"), default=str)


def _close_message(code: int, reason: str) -> dict[str, Any]:
    return {"type": "websocket.close", "code": code, "reason": reason}


class Connection(replay.Sequencer):
    """One client's stream: its cursor, and the slow path's queue while there is one."""

    __slots__ = ("hub", "recipient", "send", "proto", "pending", "task", "idle", "closed", "expiry")

    def __init__(self, hub: Owner, recipient: str, send: Send) -> None:
        super().__init__()
        self.hub, self.recipient, self.send = hub, recipient, send
        self.proto = frames.protocol_of(send)  # not None: frames may skip ASGI (frames.py)
        self.pending: deque | None = None  # not None: the slow path is on
        self.task: asyncio.Task | None = None
        self.idle = False  # nothing sent since the last heartbeat tick
        self.closed = False
        self.expiry: asyncio.TimerHandle | None = None

    def offer(self, seq: int | None, text: str) -> None:
        """A live event (cursor ``seq``, JSON ``text``): sent now if it is next, else queued."""
        if self.closed:
            return
        if self.pending is not None:
            self._queue(seq, text)
            return
        verdict = self.step(seq)
        if verdict is SEND:
            self._write(text)
        elif verdict is GAP:  # fill it from the database; the event is stored by now
            self._slow(CATCH_UP, None)

    def control(self, marker: str, argument: Any = None) -> None:
        """START, RESUME (to a cursor) or CATCH_UP, in order with the live events."""
        if self.closed:
            return
        if self.pending is None:
            self._slow(marker, argument)
        else:
            self._queue(marker, argument)

    def tick(self) -> None:
        """The hub's heartbeat timer: a heartbeat if nothing was sent since the last tick."""
        if self.idle and self.pending is None and not self.closed:
            self._write(text_of({"type": "heartbeat", "cursor": self.cursor}))
        else:
            self.idle = True

    def expires_at(self, deadline: float | None) -> None:
        """Close with EXPIRED at ``deadline`` (epoch seconds; None: never), instead of at
        the previous one: the stream lives as long as its latest token."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if deadline is not None and not self.closed:
            delay = max(0.0, deadline - time.time())
            loop = asyncio.get_running_loop()
            self.expiry = loop.call_later(delay, self.close, EXPIRED, REAUTH)

    def close(self, code: int, reason: str) -> None:
        """Close the stream with ``code`` (the client's receive loop unregisters it)."""
        if self.closed:
            return
        self.detach()
        try:
            rest = frames.send_now(self.send, _close_message(code, reason))
        except Exception:  # noqa: BLE001 - already gone
            return
        if rest is not None:
            frames.finish_later(rest)

    def detach(self) -> None:
        """Send nothing more (the client left, or a close is on its way)."""
        self.closed, self.pending = True, None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.task is not None:
            self.task.cancel()
            self.task = None

    @property
    def held(self) -> bool:
        """Registered, not yet begun (:meth:`Hub.hold`): live events wait in the queue."""
        return self.pending is not None and self.task is None and not self.closed

    def release(self, since: int | None, start: replay.Start | Exception | None) -> None:
        """Begin a held connection: its start first, then the live events held. With its
        start read and nothing held, its first frames go out now, and it is on the fast
        path at once."""
        if self.pending is None:
            return
        ready = not self.pending and self.proto is not None and isinstance(start, replay.Start)
        if ready and frames.write_texts(self.proto, self._opening(since, start)):
            self.pending, self.idle = None, False
            return
        self.pending.appendleft((START, (since, start)))
        self.task = asyncio.get_running_loop().create_task(self._drain())

    def fill(self, after: int) -> list[Event] | None:
        runtime = self.hub.runtime
        with runtime.sessions() as session:
            return replay.replay(
                session=session,
                recipient_id=self.recipient,
                since=after,
                limit=runtime.settings.stream_max_replay,
            )

    def head(self) -> int:
        with self.hub.runtime.sessions() as session:
            return replay.current_cursor(session=session, recipient_id=self.recipient)

    # --- fast path -------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self.idle = False
        if self.proto is not None and frames.write_text(self.proto, text):
            return
        try:
            rest = frames.send_now(self.send, {"type": "websocket.send", "text": text})
        except Exception:  # noqa: BLE001 - the client is gone; its receive loop cleans up
            self.closed = True
            return
        if rest is not None:  # the transport is full: wait for it on the slow path
            self._slow(rest, None)

    # --- slow path -------------------------------------------------------------------------

    def _slow(self, item: Any, argument: Any) -> None:
        self.pending = deque(((item, argument),))
        self.task = asyncio.get_running_loop().create_task(self._drain())

    def _queue(self, item: Any, argument: Any) -> None:
        if len(self.pending) >= self.hub.buffer:
            self.close(RESYNC, TOO_SLOW)
        else:
            self.pending.append((item, argument))

    async def _drain(self) -> None:
        pending = self.pending
        try:
            while pending:
                await self._handle(*pending.popleft())
                if self.closed:
                    return
        except (OSError, RuntimeError):  # the client left (uvicorn: ClientDisconnected)
            self.closed = True
            return
        except Exception:  # noqa: BLE001 - the client must learn it has to reconnect
            log.exception("live stream of %s failed", self.recipient)
            self.task = None
            self.close(ERROR, "internal error: reconnect with your cursor")
            return
        self.pending = self.task = None  # back to the fast path

    async def _handle(self, item: Any, argument: Any) -> None:
        """One slow-path item: a live event (its cursor or None, its text) or a marker."""
        if isinstance(item, frames.Rest):
            await item
        elif item is START:
            await self._start(*argument)
        elif item is RESUME:
            await self._resume(argument)
        elif item is CATCH_UP:
            await self._catch_up()
        else:
            verdict = self.step(item)
            if verdict is SEND:
                await self._put(argument)
            elif verdict is GAP:
                await self._catch_up()

    async def _put(self, text: str) -> None:
        self.idle = False
        await self.send({"type": "websocket.send", "text": text})

    async def _start(self, since: int | None, start: replay.Start | Exception | None) -> None:
        """The replay after ``since`` (if given), then the unread count: ``start`` read
        already, or read now together with the other connections starting now
        (:mod:`clarion.api.batch`)."""
        if start is None:
            start = await self.hub.starts.get((self.recipient, since, None))
        if isinstance(start, Exception):
            raise start
        texts = self._opening(since, start)
        self.idle = False
        if self.proto is None or not frames.write_texts(self.proto, texts):
            for text in texts:
                await self.send({"type": "websocket.send", "text": text})

    def _opening(self, since: int | None, start: replay.Start) -> list[str]:
        """The first frames (the replay, or a resync, then the unread count); moves the
        cursor past them."""
        resume = since is not None and since <= start.head
        self.cursor = since if resume else start.head
        texts = []
        if since is not None and not resume:  # a cursor from the future (a reset database)
            texts.append(text_of(_resync(start.head)))
        elif resume and start.replay is None:  # too much missed to replay
            self.cursor = start.head
            texts.append(text_of(_resync(self.cursor)))
        elif resume:
            texts += [text_of(event) for event in self.take(start.replay)]
        texts.append(text_of(inbox.unread_count_event(self.recipient, self.cursor, start.counts)))
        return texts

    async def _resume(self, cursor: int) -> None:
        """Replay after ``cursor``; one from the future (a reset database) gets a resync."""
        current = await asyncio.to_thread(self.head)
        if cursor > current:
            self.cursor = current
            await self._put(text_of(_resync(current)))
            return
        self.cursor = cursor
        await self._catch_up()

    async def _catch_up(self) -> None:
        missed = await asyncio.to_thread(self.catch_up)
        if missed is None:
            await self._put(text_of(_resync(self.cursor)))
            return
        for event in missed:
            await self._put(text_of(event))


def _resync(cursor: int) -> Event:
    return {"type": "resync", "reason": "gap too large: refetch the inbox", "cursor": cursor}
