"""A restart that hands the listening socket over: ``clarion api`` serves the socket a
service manager passes (``LISTEN_FDS``, as systemd's socket activation) and says READY=1
on ``NOTIFY_SOCKET``, so the new process serves before the old one is stopped, and no
client is refused while the processes change."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clarion.core.auth import issue_user_token
from tests.conftest import process_env, server_settings
from tests.e2e.procs import Proc
from tests.e2e.test_live_stream import next_event, user


def test_a_restart_on_a_passed_socket_refuses_no_connection(pg_url, redis_client, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    env = {**process_env(pg_url), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    me = user()
    url = (
        f"ws://127.0.0.1:{port}/v1/me/stream?token={issue_user_token(server_settings(pg_url), me)}"
    )
    refused: list[Exception] = []
    answered = 0
    stop = threading.Event()

    def probe() -> None:  # a new connection every few ms through the whole restart
        nonlocal answered
        while not stop.is_set():
            try:
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
                answered += 1
            except httpx.ConnectError as exc:
                refused.append(exc)
            except httpx.HTTPError:  # cut by the old process stopping: not a refusal
                pass

    old = Proc(["api"], env, tmp_path / "old.log", listening=listener)
    procs = [old]
    try:
        assert notify.recv(16) == b"READY=1"
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()

        async def scenario() -> tuple[int, dict]:
            async with connect(url) as ws:
                cursor = (await next_event(ws, "unread_count"))["cursor"]
                procs.append(Proc(["api"], env, tmp_path / "new.log", listening=listener))
                assert await asyncio.to_thread(notify.recv, 16) == b"READY=1"
                old.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
            code = await asyncio.to_thread(old.popen.wait, 15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            async with connect(f"{url}&since={cursor}") as ws:  # at once, as live.js does
                return code, await next_event(ws, "unread_count")

        code, resumed = asyncio.run(scenario())
        stop.set()
        prober.join(15)
    finally:
        stop.set()
        for proc in procs:
            proc.stop()
        listener.close()
        notify.close()
    assert code in (0, -signal.SIGTERM)
    assert resumed["data"]["total"] == 0
    assert answered > 0 and not refused, refused[:3]
