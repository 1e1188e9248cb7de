"""The live gateway's engine, shared by the WebSocket and SSE endpoints.

One :class:`Hub` per API process holds the process's single pub/sub subscription and
routes each event to the connections of its recipient (:mod:`clarion.api.live_connection`:
each connection's fast and slow paths). One hub-wide timer sends the heartbeats.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from functools import partial

from clarion import metrics
from clarion.api import live_starts
from clarion.api.batch import Batcher
from clarion.api.live_connection import (
    CATCH_UP,
    EXPIRED,
    REFUSED,
    REPLACED,
    RESTART,
    RESUME,
    RESYNC,
    START,
    Connection,
    Send,
)
from clarion.core import replay
from clarion.core.pubsub import SUBSCRIBED
from clarion.runtime import Runtime

__all__ = ["EXPIRED", "REFUSED", "REPLACED", "RESUME", "RESYNC", "START", "Connection", "Hub"]

log = logging.getLogger(__name__)

# The C scanner behind json.loads, without its Python wrapper: parses a line's header and
# says where it ends, several times cheaper than json.loads (docs/benchmarks/code.md).
_scan_header = json.JSONDecoder().scan_once


class Hub:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.buffer = runtime.settings.stream_buffer_events
        self.starts = Batcher(partial(live_starts.starts, runtime))
        self.connections: dict[str, list[Connection]] = {}
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._listen(), name="clarion-hub"),
            asyncio.create_task(self._heartbeats(), name="clarion-heartbeats"),
        ]

    async def stop(self) -> None:
        # Cancelled until done: redis-py 8.2's pub/sub read can swallow a cancellation, and
        # a swallowed one is retried promptly (every stop of an API, every test app, waits it).
        for task in self._tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.02)

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async for message in self.runtime.pubsub.subscribe():
                    if message is SUBSCRIBED:
                        delay = 0.5
                        self.broadcast(CATCH_UP)  # anything published while we were away
                    else:
                        self.dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the subscription must outlive broker hiccups
                log.warning("event subscription lost; retrying in %.1fs", delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def _heartbeats(self) -> None:
        # Ticks at half the interval: a connection idle for a whole tick gets a heartbeat,
        # so an idle one hears something every interval at most.
        while True:
            await asyncio.sleep(self.runtime.settings.stream_heartbeat_seconds / 2)
            for conns in list(self.connections.values()):
                for conn in conns:
                    conn.tick()

    def dispatch(self, message: str) -> None:
        """Route one pub/sub message to the recipients' connections (see pubsub's format:
        only each line's header is parsed; the event's text is forwarded as is)."""
        get, scan, unsequenced = self.connections.get, _scan_header, replay.UNSEQUENCED
        offered = 0
        for line in message.split("\n"):
            try:
                (recipient, kind, seq), end = scan(line, 0)
                conns = get(recipient)
            except (StopIteration, ValueError, TypeError):  # StopIteration: not JSON at all
                log.warning("ignored a malformed event line on the channel")
                continue
            if conns:
                text = line[end + 1 :]  # after the header's tab
                if kind in unsequenced:
                    seq = None
                for conn in conns:
                    conn.offer(seq, text)
                offered += len(conns)
        if offered:
            metrics.STREAM_EVENTS.inc(offered)

    def broadcast(self, marker: str) -> None:
        for conns in self.connections.values():
            for conn in conns:
                conn.control(marker)

    def open(
        self, recipient: str, send: Send, since: int | None, expires_at: float | None = None
    ) -> Connection:
        """A new connection of ``recipient`` that starts with its replay and unread count,
        and is closed with EXPIRED at ``expires_at`` (its token's end, epoch seconds)."""
        conn = self.hold(recipient, send)
        self.begin(conn, since, expires_at)
        return conn

    def hold(self, recipient: str, send: Send) -> Connection:
        """A connection of ``recipient`` registered before its start is read (and its
        connect counted): the live events published meanwhile wait in its queue, so none
        is missed, until :meth:`begin` or :meth:`unregister`."""
        conn = Connection(self, recipient, send)
        conn.pending = deque()
        self.connections.setdefault(recipient, []).append(conn)
        return conn

    def begin(
        self,
        conn: Connection,
        since: int | None,
        expires_at: float | None = None,
        start: replay.Start | Exception | None = None,
    ) -> None:
        """Start a held connection: its replay after ``since`` and unread count (``start``
        if read already, or the error reading it failed with) ahead of the events held;
        the oldest connections of its recipient over the cap are closed."""
        if conn.closed:
            return  # closed while held (a shutdown, too far behind): its close is sent
        conn.expires_at(expires_at)
        conns = self.connections.get(conn.recipient, [])
        begun = [c for c in conns if c is conn or not c.held]
        over = len(begun) - self.runtime.settings.stream_max_connections_per_user
        for old in begun[: max(0, over)]:
            conns.remove(old)
            old.close(REPLACED, "too many connections: the oldest is closed")
        if not conn.closed:
            conn.release(since, start)

    def unregister(self, conn: Connection) -> None:
        conn.detach()
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
