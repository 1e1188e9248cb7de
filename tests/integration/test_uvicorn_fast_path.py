"""The live stream's fast path against the uvicorn this project pins.

``clarion.api.frames.send_now`` steps uvicorn's WebSocket ``send`` coroutine once and
relies on it finishing without suspending while the transport is not paused. That is
uvicorn's behaviour, not the ASGI contract: a uvicorn release that suspended on every send
would not break delivery (the slow path takes over) but would silently slow every frame.
pyproject.toml pins the range tested here; this test fails loudly outside it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from websockets.sync.client import connect

from clarion.api.frames import send_now
from tests.e2e.procs import free_port

FRAMES = 200


@contextlib.contextmanager
def _served(app) -> Iterator[int]:
    """``app`` on a uvicorn server in a thread, once it serves; yields its port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_uvicorns_websocket_send_finishes_without_suspending_for_a_reading_client():
    stepped: list[bool] = []

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        for i in range(FRAMES):
            rest = send_now(send, {"type": "websocket.send", "text": str(i)})
            stepped.append(rest is None)
            if rest is not None:
                await rest
        await send({"type": "websocket.close", "code": 1000})

    with _served(app) as port, connect(f"ws://127.0.0.1:{port}/") as ws:
        got = [ws.recv(timeout=5) for _ in range(FRAMES)]

    assert got == [str(i) for i in range(FRAMES)]
    assert all(stepped), (
        f"uvicorn {uvicorn.__version__}: {stepped.count(False)} of {FRAMES} sends suspended "
        "with the transport not paused; the live stream's fast path no longer holds"
    )


def _serve_frames(texts: list[str], written: list[bool]) -> contextlib.AbstractContextManager[int]:
    """A uvicorn server whose one WebSocket connection gets ``texts`` as live events through
    the hub's Connection (its fast path), noting whether each was written directly (a
    transport paused by a big frame is not counted: those go through ASGI by design)."""
    from types import SimpleNamespace

    from clarion.api import frames
    from clarion.api.live_hub import Connection, Hub

    original = frames.write_text

    def write_text(proto, text):
        paused = not proto.writable.is_set()
        done = original(proto, text)
        if not paused:
            written.append(done)
        return done

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        settings = SimpleNamespace(stream_buffer_events=1000)
        conn = Connection(Hub(SimpleNamespace(settings=settings)), "r", send)
        assert conn.proto is not None, "uvicorn's default WebSocket protocol is not the sansio one"
        frames.write_text = write_text
        try:
            for seq, text in enumerate(texts, start=1):
                conn.offer(seq, text)
                while conn.pending is not None:  # a paused transport: the slow path drains
                    await conn.task
        finally:
            frames.write_text = original
        assert (await receive())["type"] == "websocket.disconnect"

    return _served(app)


# Every header size of RFC 6455 (7-bit, 16-bit and 64-bit lengths, at their edges),
# multi-byte UTF-8 included (the length is of the encoded bytes).
TEXTS = ["", "a", "x" * 125, "x" * 126, "é" * 63 + "x", "€" * 21_845, "y" * 65_536, "z" * 200_000]


def test_live_frames_written_to_the_transport_arrive_intact():
    written: list[bool] = []
    with (
        _serve_frames(TEXTS, written) as port,
        connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws,
    ):
        got = [ws.recv(timeout=5) for _ in TEXTS]
    assert got == TEXTS
    assert written and all(written), "the frames did not take the direct write"


def test_with_compression_negotiated_live_frames_go_through_asgi_and_arrive_intact():
    written: list[bool] = []
    with (
        _serve_frames(TEXTS, written) as port,
        connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws,  # offers deflate
    ):
        assert ws.protocol.extensions, "the client and server did not agree on deflate"
        got = [ws.recv(timeout=5) for _ in TEXTS]
    assert got == TEXTS
    assert written and not any(written)


def test_a_connections_first_frames_written_in_one_write_arrive_intact():
    from clarion.api import frames

    written: list[bool] = []

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        written.append(frames.write_texts(frames.protocol_of(send), TEXTS))
        assert (await receive())["type"] == "websocket.disconnect"

    with (
        _served(app) as port,
        connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws,
    ):
        got = [ws.recv(timeout=5) for _ in TEXTS]
    assert written == [True]
    assert got == TEXTS
