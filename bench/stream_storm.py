"""bench.stream's phase 4, the clients' side: processes of resuming WebSocket clients.

Each :class:`Resuming` client connects to ``/v1/me/stream`` as its own recipient, goes
live (its ``unread_count``), and after a 1012 reconnects the way ``clarion/web/live.js``
does: at once, then with full-jitter backoff while connects fail, with ``since`` = the
cursor of the last event it saw. It records its gap and every ``notification.created``
sequence number it received, for the check in :mod:`bench.stream_restart`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
from collections import Counter

from bench import _common as common
from bench.stream_peers import run as run_loop
from bench.stream_peers import take_frames

LIVE, CREATED = "unread_count", "notification.created"
CLOSE_FRAME = bytes([0x88, 0x82]) + b"\0\0\0\0" + b"\x03\xe8"


class Resuming(asyncio.Protocol):
    """One client of one recipient: reconnects with its cursor until told to stop."""

    def __init__(self, owner: Storm, rid: str, path: str) -> None:
        self.owner, self.rid, self.path = owner, rid, path
        self.cursor: int | None = None
        self.seqs: Counter = Counter()  # notification.created cursors received
        self.transport = None
        self.buf, self.open, self.attempt = bytearray(), False, 0
        self.closed_at: float | None = None  # the 1012 (or the drop) of the restart
        self.first_after = self.live_after = None  # after reconnecting
        self.live_at: float | None = None
        self.connects = self.resyncs = 0

    # --- connecting ---------------------------------------------------------------------

    def start(self, delay: float) -> None:
        self.owner.loop.call_later(delay, lambda: asyncio.ensure_future(self._connect()))

    async def _connect(self) -> None:
        if self.owner.stopping:
            return
        path = self.path if self.cursor is None else f"{self.path}&since={self.cursor}"
        key = base64.b64encode(os.urandom(16))
        self.request = (
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path.encode(), self.owner.port, key)
        )
        self.buf, self.open = bytearray(), False
        self.connects += 1
        try:
            await self.owner.loop.create_connection(lambda: self, "127.0.0.1", self.owner.port)
        except OSError:
            self._retry()

    def _retry(self) -> None:
        """live.js's backoff: full jitter, growing while connects fail."""
        base, cap = self.owner.backoff
        self.start(random.uniform(0, min(cap, base * 2**self.attempt)))
        self.attempt += 1

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.owner.stopping:
            return
        if self.closed_at is None and self.live_at is not None:
            self.closed_at = time.time()  # dropped without a close frame
        if self.open:
            self.start(0)  # as after a 1012: at once
        else:
            self._retry()

    # --- frames -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now, buf = time.time(), self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = buf[:12].lower() == b"http/1.1 101"
            del buf[: end + 4]
            if not ok:  # refused (a rate limit, the server stopping): retry later
                self.transport.close()
                return
            self.open, self.attempt = True, 0
        for b0, payload in take_frames(buf):
            self.frame(b0 & 0x0F, payload, now)

    def frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 9:  # ping: a masked pong (the all-zero mask leaves the payload as is)
            self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            return
        if opcode == 8:
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            self.owner.closes[code] += 1
            if self.closed_at is None and self.live_at is not None:
                self.closed_at = now
            self.transport.close()
            return
        event = json.loads(payload)
        if self.closed_at is not None and self.first_after is None:
            self.first_after = now - self.closed_at
        kind, cursor = event.get("type"), event.get("cursor")
        if kind == CREATED:
            self.seqs[cursor] += 1
        elif kind == "resync":
            self.resyncs += 1
        if cursor is not None and kind != "resync":
            self.cursor = cursor
        if kind == LIVE:
            if self.live_at is None:
                self.live_at = now
                self.owner.went_live()
            elif self.closed_at is not None and self.live_after is None:
                self.live_after = now - self.closed_at
                self.owner.went_live()

    def stop(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_FRAME)
            self.transport.close()


class Storm:
    """One client process's clients; commands from the harness over a pipe."""

    def __init__(self, pipe, counter) -> None:
        self.pipe, self.counter = pipe, counter
        self.loop = asyncio.get_running_loop()
        self.clients: list[Resuming] = []
        self.closes: Counter = Counter()
        self.stopping, self.port, self.backoff = False, 0, (0.1, 1.0)
        self.live = 0

    def went_live(self) -> None:  # the pool reads the count as "frames"
        self.live += 1
        self.counter.value = self.live

    async def connect(self, port: int, backoff: list, paths: list, parallel: int) -> None:
        """The first connects, ``parallel`` handshakes in flight, until all are live."""
        self.port, self.backoff = port, tuple(backoff)
        self.clients = [Resuming(self, rid, path) for rid, path in paths]
        gate = asyncio.Semaphore(parallel)

        async def one(client: Resuming) -> None:
            async with gate:
                await client._connect()
                while client.live_at is None:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one(c) for c in self.clients))

    async def serve(self) -> None:
        while True:
            try:
                command, kw = await asyncio.to_thread(self.pipe.recv)
            except EOFError:
                return
            answer = None
            if command == "connect":
                await self.connect(**kw)
            elif command == "reset":
                self.live, self.counter.value = 0, 0
            elif command == "stats":
                answer = {
                    "clients": [
                        (c.rid, dict(c.seqs), c.first_after, c.live_after, c.connects, c.resyncs)
                        for c in self.clients
                    ],
                    "closes": dict(self.closes),
                }
            elif command == "stop":
                self.stopping = True
                for client in self.clients:
                    client.stop()
                await asyncio.sleep(0.2)
            elif command == "exit":
                return
            self.pipe.send(answer)


def storm_main(pipe, counter, _deflate: bool) -> None:
    common.raise_fd_limit()

    async def main() -> None:
        await Storm(pipe, counter).serve()

    run_loop(main())
