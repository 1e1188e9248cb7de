"""The live stream's fast path against the uvicorn this project pins.

``clarion.api.live_hub.send_now`` steps uvicorn's WebSocket ``send`` coroutine once and
relies on it finishing without suspending while the transport is not paused. That is
uvicorn's behaviour, not the ASGI contract: a uvicorn release that suspended on every send
would not break delivery (the slow path takes over) but would silently slow every frame.
pyproject.toml pins the range tested here; this test fails loudly outside it.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from websockets.sync.client import connect

from clarion.api.live_hub import send_now
from tests.e2e.procs import free_port

FRAMES = 200


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

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            got = [ws.recv(timeout=5) for _ in range(FRAMES)]
    finally:
        server.should_exit = True
        thread.join(10)

    assert got == [str(i) for i in range(FRAMES)]
    assert all(stepped), (
        f"uvicorn {uvicorn.__version__}: {stepped.count(False)} of {FRAMES} sends suspended "
        "with the transport not paused; the live stream's fast path no longer holds"
    )
