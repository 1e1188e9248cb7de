"""The live gateway's engine, shared by the WebSocket and SSE endpoints.

One :class:`Hub` per API process holds the process's single pub/sub subscription and
routes each event to the connections of its recipient. Each :class:`Connection` has a
bounded buffer: a client too slow to keep up is closed with "resync" instead of slowing
anyone else down. :func:`events` is what a connection sends: the replay from its cursor,
an unread count, then live events in cursor order with gaps filled from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from clarion.core import inbox, stream
from clarion.core.pubsub import SUBSCRIBED
from clarion.runtime import Runtime

log = logging.getLogger(__name__)
Event = dict[str, Any]

# Close codes: 1012 service restart (reconnect elsewhere), 4000 resync (refetch, then
# reconnect), 4001 replaced by a newer connection of the same user.
RESTART, RESYNC, REPLACED = 1012, 4000, 4001
SYNC: Event = {"type": "_sync"}


class Connection:
    def __init__(self, recipient: str, buffer: int) -> None:
        self.recipient = recipient
        self.queue: asyncio.Queue[Event] = asyncio.Queue(buffer)
        self.close_code: int | None = None
        self.close_reason = ""

    def offer(self, event: Event) -> None:
        if self.close_code is not None:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close(RESYNC, "resync: too far behind; refetch the inbox and reconnect")

    def close(self, code: int, reason: str) -> None:
        """Ask the connection's sender to close; it wakes up at once."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait({"type": "_close"})


class Hub:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.connections: dict[str, list[Connection]] = {}
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._listen(), name="clarion-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async for event in self.runtime.pubsub.subscribe():
                    if event == SUBSCRIBED:
                        delay = 0.5
                        self.broadcast(SYNC)  # anything published while we were away
                    else:
                        self.dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the subscription must outlive broker hiccups
                log.warning("event subscription lost; retrying in %.1fs", delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    def dispatch(self, event: Event) -> None:
        for conn in self.connections.get(event.get("recipient"), ()):
            conn.offer(event)

    def broadcast(self, event: Event) -> None:
        for conns in self.connections.values():
            for conn in conns:
                conn.offer(event)

    def register(self, recipient: str) -> Connection:
        settings = self.runtime.settings
        conn = Connection(recipient, settings.stream_buffer_events)
        conns = self.connections.setdefault(recipient, [])
        conns.append(conn)
        while len(conns) > settings.stream_max_connections_per_user:
            conns.pop(0).close(REPLACED, "too many connections: the oldest is closed")
        return conn

    def unregister(self, conn: Connection) -> None:
        conns = self.connections.get(conn.recipient, [])
        if conn in conns:
            conns.remove(conn)
        if not conns:
            self.connections.pop(conn.recipient, None)

    def shutdown(self) -> None:
        """Close every connection with 1012 so clients reconnect to another process."""
        for conns in list(self.connections.values()):
            for conn in list(conns):
                conn.close(RESTART, "service restart: reconnect with your cursor")

    def shutdown_from_thread(self) -> None:
        """``shutdown`` from another thread (embedded mode stops the API from outside)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.shutdown)

    def count(self) -> int:
        return sum(len(c) for c in self.connections.values())


def _start(runtime: Runtime, recipient: str) -> tuple[int, Event]:
    with runtime.sessions() as session:
        cursor = stream.current_cursor(session=session, recipient_id=recipient)
        return cursor, inbox.unread_event(session=session, recipient_id=recipient, cursor=cursor)


def _resync(cursor: int) -> Event:
    return {"type": "resync", "reason": "gap too large: refetch the inbox", "cursor": cursor}


async def events(runtime: Runtime, conn: Connection, since: int | None) -> AsyncIterator[Event]:
    """Replay after ``since`` (if given), the unread count, then live events, in order."""
    settings = runtime.settings

    def fill(after: int) -> list[Event] | None:
        with runtime.sessions() as session:
            return stream.replay(
                session=session,
                recipient_id=conn.recipient,
                since=after,
                limit=settings.stream_max_replay,
            )

    def head() -> int:
        with runtime.sessions() as session:
            return stream.current_cursor(session=session, recipient_id=conn.recipient)

    current, unread = await asyncio.to_thread(_start, runtime, conn.recipient)
    resume = since is not None and since <= current
    sequencer = stream.Sequencer(since if resume else current, fill, head)
    if since is not None and not resume:
        yield _resync(current)  # a cursor from the future (another deployment, a reset)
    pending: list[Event] = [SYNC] if resume else []
    while True:
        for event in pending:
            async for out in _emit(sequencer, event):
                yield out
        if unread is not None:
            yield {**unread, "cursor": sequencer.cursor}
            unread = None
        try:
            event = await asyncio.wait_for(conn.queue.get(), settings.stream_heartbeat_seconds)
        except TimeoutError:
            yield {"type": "heartbeat", "cursor": sequencer.cursor}
            pending = []
            continue
        if event["type"] == "_close":
            return
        pending = [event]


async def _emit(sequencer: stream.Sequencer, event: Event) -> AsyncIterator[Event]:
    if event["type"] == "_resume":
        sequencer.cursor = event["cursor"]
        event = SYNC
    out = sequencer.accept(event) if event is not SYNC else stream.GAP
    if out is stream.GAP:
        out = await asyncio.to_thread(sequencer.catch_up)
    if out is None:
        yield _resync(sequencer.cursor)
        return
    for item in out:
        yield item
