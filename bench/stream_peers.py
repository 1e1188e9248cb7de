"""The live-stream benchmark's peers: WebSocket clients, the bare server, a POST client.

- :func:`client_main` runs in each client process; :class:`ClientPool` is the harness's
  side of them (commands over a pipe, one shared frame counter per process). A process
  holds many connections with a minimal WebSocket client on ``asyncio.Protocol``: the
  handshake, frame headers, pongs to the server's keepalive pings, and nothing more. It
  counts ``notification.created`` frames (a byte check, no JSON) and decodes them only
  when asked to record ids. The clients are not under test, so they are kept cheap: on 2
  cores they share the CPU with the server they measure.
- ``python -m bench.stream_peers bare PORT`` is the baseline server: ``websockets``'
  asyncio server that accepts and does nothing. A ``/control`` connection asks it to
  broadcast a frame K times to every other connection (``websockets.broadcast``).
- :func:`asgi_floor` is a reference point: a raw ASGI WebSocket app on uvicorn.
- :func:`post` sends POST /v1/notifications over raw keep-alive HTTP/1.1 connections
  (open loop at a rate, or closed loop), noting each notification id with the time its
  POST was sent (or due, if it went out late). It costs far less CPU than httpx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time
import zlib
from collections import Counter

from bench import _common as common

CREATED = b'"notification.created"'
PONG, CLOSE, ZERO_MASK = 0x8A, 0x88, b"\0\0\0\0"


def run(coro):
    """asyncio.run on uvloop when installed (uvicorn picks it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def take_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """The whole frames at the start of ``buf`` (first byte, payload), removed from it; a
    partial frame stays for the next read."""
    frames, pos, n = [], 0, len(buf)
    while n - pos >= 2:
        b0, size, head = buf[pos], buf[pos + 1] & 0x7F, 2
        if size >= 126:
            head = 4 if size == 126 else 10
            if n - pos < head:
                break
            size = int.from_bytes(buf[pos + 2 : pos + head], "big")
        if n - pos < head + size:
            break
        frames.append((b0, bytes(buf[pos + head : pos + head + size])))
        pos += head + size
    if pos:
        del buf[:pos]
    return frames


class Client(asyncio.Protocol):
    """One WebSocket connection; frames are reported to its :class:`Clients`."""

    def __init__(self, owner: Clients, request: bytes, tag: str) -> None:
        self.owner, self.request, self.tag = owner, request, tag
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.open = self.closing = False
        self.first_seen = not owner.wait_first  # Clarion sends unread_count first
        self.inflate = None
        self.ready: asyncio.Future[float] = owner.loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.owner.live.discard(self)
        if not self.closing:
            self.owner.dropped += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def data_received(self, data: bytes) -> None:
        now, buf = time.time(), self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            if not head.startswith(b"http/1.1 101"):
                if not self.ready.done():  # (done: the harness gave up waiting)
                    self.ready.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                self.closing = True
                self.transport.close()
                return
            self.open = True
            if b"permessage-deflate" in head:
                self.inflate = zlib.decompressobj(-15)
            if self.first_seen and not self.ready.done():
                self.ready.set_result(now)
        for b0, payload in take_frames(buf):
            self.frame(b0, payload, now)

    def frame(self, b0: int, payload: bytes, now: float) -> None:
        opcode = b0 & 0x0F
        if opcode == 9:  # ping: a masked pong (the all-zero mask leaves the payload as is)
            self.transport.write(bytes([PONG, 0x80 | len(payload)]) + ZERO_MASK + payload)
            return
        if opcode == 8:  # closed by the server (resync, replaced...): counted as dropped
            if not self.closing:
                self.owner.closes[int.from_bytes(payload[:2], "big") if payload else 1005] += 1
            self.transport.close()
            return
        if self.inflate is not None and b0 & 0x40:  # every frame, to keep the shared window
            payload = self.inflate.decompress(payload + b"\0\0\xff\xff")
        if not self.first_seen:  # Clarion's unread_count: now the connection is live
            self.first_seen = True
            if not self.ready.done():
                self.ready.set_result(now)
            return
        if CREATED in payload[:40]:
            self.owner.received(payload, now)

    def close(self) -> None:
        self.closing = True
        if self.transport and not self.transport.is_closing():
            self.transport.write(bytes([CLOSE, 0x82]) + ZERO_MASK + b"\x03\xe8")
            self.transport.close()


class Clients:
    """One client process: many connections, commands from the harness over a pipe."""

    def __init__(self, pipe, counter, deflate: bool) -> None:
        self.pipe, self.counter, self.deflate = pipe, counter, deflate
        self.loop = asyncio.get_running_loop()
        self.live: set[Client] = set()
        self.wait_first, self.record = True, False
        self.frames, self.last, self.dropped, self.ids = 0, 0.0, 0, []
        self.closes: Counter = Counter()

    def received(self, payload: bytes, now: float) -> None:
        self.frames += 1
        self.counter.value = self.frames
        self.last = now
        if self.record:
            self.ids.append((json.loads(payload)["data"]["id"], now))

    async def connect(self, port: int, targets: list, parallel: int, wait_first: bool) -> dict:
        self.wait_first = wait_first
        gate, latencies, errors = asyncio.Semaphore(parallel), [], Counter()
        extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.deflate else b""

        async def one(path: str, tag: str) -> None:
            key = base64.b64encode(os.urandom(16))
            request = (
                b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                b"%s\r\n" % (path.encode(), port, key, extension)
            )
            async with gate:
                started, client = time.time(), Client(self, request, tag)
                try:
                    await self.loop.create_connection(lambda: client, "127.0.0.1", port)
                    latencies.append(await asyncio.wait_for(client.ready, 60) - started)
                    self.live.add(client)
                except (OSError, TimeoutError) as exc:
                    errors[str(exc)[:80] or type(exc).__name__] += 1
                    client.close()

        started = time.time()
        await asyncio.gather(*(one(path, tag) for path, tag in targets))
        return {"latencies": latencies, "errors": errors, "start": started, "end": time.time()}

    async def serve(self) -> None:
        while True:
            try:
                command, kwargs = await asyncio.to_thread(self.pipe.recv)
            except EOFError:  # the harness is gone
                return
            answer = None
            if command == "connect":
                answer = await self.connect(**kwargs)
            elif command == "reset":
                self.frames, self.last, self.ids = 0, 0.0, []
                self.counter.value, self.record = 0, kwargs.get("record", False)
            elif command == "stats":
                answer = {"frames": self.frames, "last": self.last, "ids": self.ids}
                answer.update(live=len(self.live), dropped=self.dropped, closes=self.closes)
            elif command == "close":
                for client in [c for c in self.live if c.tag in kwargs["tags"]]:
                    client.close()
                    self.live.discard(client)
                await asyncio.sleep(0.2)
            elif command == "exit":
                return
            self.pipe.send(answer)


def client_main(pipe, counter, deflate: bool) -> None:
    """Entry point of a client process (multiprocessing, fork)."""
    common.raise_fd_limit()

    async def main() -> None:
        await Clients(pipe, counter, deflate).serve()

    run(main())


class ClientPool:
    """The harness's side of the client processes (one process group: "clients")."""

    def __init__(self, n: int, deflate: bool, main=client_main) -> None:
        ctx = mp.get_context("fork")
        self.counters, self.pipes, self.procs = [], [], []
        for _ in range(n):
            mine, theirs = ctx.Pipe()
            counter = ctx.RawValue("q", 0)
            proc = ctx.Process(target=main, args=(theirs, counter, deflate), daemon=True)
            proc.start()
            self.counters.append(counter)
            self.pipes.append(mine)
            self.procs.append(proc)
        self.pgid = self.procs[0].pid
        for proc in self.procs:
            os.setpgid(proc.pid, self.pgid)

    def ask(self, command: str, kwargs: list[dict], timeout: float = 600) -> list:
        for pipe, kw in zip(self.pipes, kwargs, strict=True):
            pipe.send((command, kw))
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a client process did not answer {command!r}")
            answers.append(pipe.recv())
        return answers

    def each(self, command: str, **kwargs) -> list:
        return self.ask(command, [kwargs] * len(self.pipes))

    def connect(self, port: int, targets: list, parallel: int, wait_first: bool) -> dict:
        """Connect ``targets`` ((path, tag) pairs), spread over the processes."""
        n, kw = len(self.pipes), {"port": port, "parallel": parallel, "wait_first": wait_first}
        answers = self.ask("connect", [{**kw, "targets": targets[i::n]} for i in range(n)])
        return {
            "latencies": [x for a in answers for x in a["latencies"]],
            "errors": sum((a["errors"] for a in answers), Counter()),
            "start": min(a["start"] for a in answers),
            "end": max(a["end"] for a in answers),
        }

    def frames(self) -> int:
        return sum(c.value for c in self.counters)

    def stats(self) -> dict:
        answers = self.each("stats")
        return {
            "frames": sum(a["frames"] for a in answers),
            "last": max(a["last"] for a in answers),
            "ids": dict(x for a in answers for x in a["ids"]),
            "live": sum(a["live"] for a in answers),
            "dropped": sum(a["dropped"] for a in answers),
            "closes": dict(sum((a["closes"] for a in answers), Counter())),
        }

    def close(self, *tags: str) -> None:
        self.each("close", tags=set(tags))

    def rss_kib(self) -> int:
        return sum(common.rss_kib(p.pid) for p in self.procs)

    def shutdown(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("exit", {}))
        for proc in self.procs:
            proc.join(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)


# --- the baseline server ------------------------------------------------------------------


async def bare_server(port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    async def handler(ws) -> None:
        if ws.request.path != "/control":
            await ws.wait_closed()
            return
        async for message in ws:  # {"rounds": K, "frame": "..."}: broadcast, then "done"
            command = json.loads(message)
            others = [c for c in ws.server.connections if c is not ws]
            for _ in range(command["rounds"]):
                broadcast(others, command["frame"])
                await asyncio.sleep(0)
            await ws.send(json.dumps({"connections": len(others)}))

    # Compression as the client asks (websockets' default); backlog as uvicorn's.
    async with serve(handler, "127.0.0.1", port, backlog=2048) as server:
        await server.serve_forever()


async def asgi_floor(scope, receive, send) -> None:
    """Reference, not a baseline: the least a WebSocket endpoint costs on uvicorn (a raw ASGI
    app that sends one frame, as Clarion's unread_count, then waits). Run with --lifespan off."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": '{"type":"unread_count","cursor":0}'})
    while (await receive())["type"] != "websocket.disconnect":
        pass


# --- POST /v1/notifications over raw HTTP/1.1 ---------------------------------------------


async def post(port: int, key: str, pool: list[str], load, rate: float, duration: float) -> None:
    """Open loop at ``rate`` POST/s (0: closed loop) for ``duration`` s, ``load.connections``
    keep-alive connections; fills ``load`` (bench.loadgen.Load) like loadgen.drive does."""
    head = (
        f"POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()
    load.start = time.time()
    deadline, issued = load.start + duration, 0

    async def connection() -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                slot, issued = issued, issued + 1
                due = load.start + slot / rate if rate else time.time()
                await asyncio.sleep(max(0.0, due - time.time()))
                if time.time() >= deadline:
                    return
                body = json.dumps(
                    {
                        "recipients": [random.choice(pool)],
                        "category": "bench",
                        "type": "load",
                        "title": "Benchmark notification",
                        "body": "Sent by bench/stream.py",
                    }
                ).encode()
                sent = due if rate else time.time()  # a late POST counts from when it was due
                writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
                answer = await reader.readuntil(b"\r\n\r\n")
                status = int(answer[9:12])
                length = int(answer.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                data = await reader.readexactly(length)
                if status != 202:
                    load.errors[f"HTTP {status}"] += 1
                    continue
                load.post_latency.append(time.time() - sent)
                for item in json.loads(data)["notifications"]:
                    load.sent_at[item["id"]] = sent
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(load.connections)))
    load.end = time.time()


def serve_floor(port: int) -> None:
    """asgi_floor on uvicorn as ``clarion api`` serves it: the same backlog, the listening
    socket passed by the harness (socket activation) when there is one, READY=1 once it
    serves."""
    import uvicorn

    from clarion.api.server import BACKLOG, NotifyingServer, inherited_sockets

    config = uvicorn.Config(
        asgi_floor, port=port, lifespan="off", log_level="warning", backlog=BACKLOG
    )
    NotifyingServer(config).run(sockets=inherited_sockets())


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["bare", port]:
            run(bare_server(int(port)))
        case ["floor", "--port", port]:  # as `clarion api --port`
            serve_floor(int(port))
        case _:
            sys.exit("usage: python -m bench.stream_peers bare PORT | floor --port PORT")
