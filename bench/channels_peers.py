"""The channels benchmark's peer servers, each run in its own process (not a thread of the
measuring process, so the GIL does not distort the figures):

- ``python -m bench.channels_peers smtp PORT COUNTERS``: an aiosmtpd server on uvloop that
  accepts every message (250). When the mode byte of COUNTERS is 1, it answers 451 to the
  first DATA of each Message-ID and 250 to the next one (the retry-cycle phase).
- ``python -m bench.channels_peers push PORT COUNTERS``: a minimal HTTP/1.1 keep-alive
  server on ``asyncio.Protocol`` that answers every POST with 201 and a Location, as a
  push service does. It neither decrypts nor checks the VAPID token: the tests
  (``tests/channels/pushservice.py``) prove those; here it only has to be cheap.

COUNTERS is a small file both sides map (:class:`Counters`): the server counts what it
accepted and what it deferred, and the harness reads the counts (and sets the mode)
without any request to the server.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import struct
import sys
from pathlib import Path

_LAYOUT = struct.Struct("<qqq")  # accepted, deferred, mode
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Counters:
    """Three int64s in a shared file: accepted, deferred (4xx), and the server's mode."""

    def __init__(self, path: Path | str, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            self.path.write_bytes(b"\0" * _LAYOUT.size)
        self._file = open(self.path, "r+b")  # noqa: SIM115 - lives with the mapping
        self._map = mmap.mmap(self._file.fileno(), _LAYOUT.size)

    def read(self) -> tuple[int, int, int]:
        return _LAYOUT.unpack_from(self._map)

    @property
    def accepted(self) -> int:
        return self.read()[0]

    @property
    def deferred(self) -> int:
        return self.read()[1]

    @property
    def mode(self) -> int:
        return self.read()[2]

    def add(self, accepted: int = 0, deferred: int = 0) -> None:
        """Only the server process writes the counts (one writer, no lock needed)."""
        a, d, m = self.read()
        _LAYOUT.pack_into(self._map, 0, a + accepted, d + deferred, m)

    def set_mode(self, mode: int) -> None:
        struct.pack_into("<q", self._map, 16, mode)


# --- SMTP ----------------------------------------------------------------------------------

FAIL_FIRST = 1


class SmtpHandler:
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.deferred_ids: set[bytes] = set()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        # Both modes look the Message-ID up, so the retry phase's server costs the same.
        found = MESSAGE_ID.search(envelope.content, 0, 4096)
        key = found.group(1) if found else b""
        if self.counters.mode == FAIL_FIRST and key not in self.deferred_ids:
            self.deferred_ids.add(key)
            self.counters.add(deferred=1)
            return "451 4.3.0 Try again later"
        self.counters.add(accepted=1)
        return "250 OK"


async def smtp_main(port: int, counters: Counters) -> None:
    from aiosmtpd.smtp import SMTP

    handler = SmtpHandler(counters)
    loop = asyncio.get_running_loop()
    # A fixed hostname: aiosmtpd would otherwise call socket.getfqdn() for each session.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.smtp.local", ident="bench-sink", loop=loop),
        host="127.0.0.1",
        port=port,
        backlog=128,
    )
    async with server:
        await server.serve_forever()


# --- push service --------------------------------------------------------------------------


class PushProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive: every request is answered 201 with a Location."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self.counters.add(accepted=1)
            n = self.counters.accepted
            self.transport.write(
                b"HTTP/1.1 201 Created\r\nLocation: http://127.0.0.1/m/%d\r\n"
                b"Content-Length: 0\r\n\r\n" % n
            )


async def push_main(port: int, counters: Counters) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: PushProtocol(counters), host="127.0.0.1", port=port, backlog=128
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    kind, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    counters = Counters(path)
    coro = smtp_main(port, counters) if kind == "smtp" else push_main(port, counters)
    print(f"{kind} peer pid {os.getpid()} on 127.0.0.1:{port}", flush=True)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
