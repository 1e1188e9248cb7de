"""``clarion dev``: one process, no services; what it accepted survives a restart."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.procs import Proc, free_port, wait_for

pytestmark = pytest.mark.e2e


def start(tmp_path, port: int, name: str) -> tuple[Proc, str, str]:
    args = ["dev", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    # The embedded mode needs no secret: the environment must not have to provide one.
    proc = Proc(args, {"CLARION_SECRET_KEY": None}, tmp_path / f"{name}.log")
    wait_for(lambda: "user token:" in proc.output(), 30, "the dev banner", proc)
    out = proc.output()
    key = re.search(r"API key:\s+(\S+)", out).group(1)
    token = re.search(r"user token:\s+(\S+)", out).group(1)
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200,
        30,
        "dev API ready",
        proc,
    )
    return proc, key, token


def _hold_sse(base: str, token: str) -> None:
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.stream("GET", f"{base}/v1/me/stream/sse?token={token}", timeout=30) as response,
    ):
        for _ in response.iter_lines():
            pass


def inbox_ids(base: str, token: str) -> list[str]:
    items, cursor = [], None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(
            f"{base}/v1/me/notifications",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        items += [i["id"] for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            return items


def test_dev_runs_everything_and_a_restart_loses_nothing_accepted(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, key, token = start(tmp_path, port, "first")
    # The banner's curl line is what a newcomer copies: it must work as printed.
    assert f"curl -s -X POST {base}/v1/notifications" in proc.output()
    accepted: list[str] = []
    try:
        # A live stream is open while we stop: it must not hold the shutdown.
        stream = threading.Thread(target=_hold_sse, args=(base, token), daemon=True)
        stream.start()
        time.sleep(0.5)
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as producer:

            def post(i: int) -> str:
                answer = producer.post(
                    f"{base}/v1/notifications",
                    json={"recipients": ["dev-user"], "category": "system", "title": f"n{i}"},
                )
                assert answer.status_code == 202
                return answer.json()["notifications"][0]["id"]

            # Eight at a time: accepted faster than the worker stores them, so some are
            # still queued at the stop (the worker starts on each at once).
            with ThreadPoolExecutor(8) as pool:
                accepted += pool.map(post, range(120))
        before_stop = len(inbox_ids(base, token))
    finally:
        # Stop at once, with work still queued.
        started = time.monotonic()
        assert proc.stop(signal.SIGINT) == 0, proc.output()[-2000:]
        stop_seconds = time.monotonic() - started
    # Otherwise this run proved nothing about the restart.
    assert before_stop < len(accepted)
    assert stop_seconds < 4.5, f"stopping took {stop_seconds:.1f}s: did a live stream hold it?"

    proc, key2, token = start(tmp_path, port, "second")
    try:
        assert key2 == key  # the dev key is kept in the data dir
        wait_for(
            lambda: sorted(inbox_ids(base, token)) == sorted(accepted),
            60,
            "every accepted notification after the restart",
            proc,
        )
    finally:
        proc.stop(signal.SIGINT)


def test_dev_delivers_a_post_to_the_open_stream_within_300_ms(tmp_path):
    """The embedded broker wakes on publish: a send reaches the bell at once, not after
    kombu's one-second polling sleep (the median was ~900 ms before)."""
    from websockets.sync.client import connect

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, key, token = start(tmp_path, port, "latency")
    latencies = []
    try:
        with (
            connect(f"ws://127.0.0.1:{port}/v1/me/stream?token={token}") as ws,
            httpx.Client(headers={"Authorization": f"Bearer {key}"}) as producer,
        ):
            assert json.loads(ws.recv(timeout=10))["type"] == "unread_count"
            for i in range(20):
                time.sleep(0.05 + (i % 5) * 0.05)  # not in step with any polling interval
                sent = time.perf_counter()
                answer = producer.post(
                    f"{base}/v1/notifications",
                    json={"recipients": ["dev-user"], "category": "system", "title": f"n{i}"},
                )
                nid = answer.json()["notifications"][0]["id"]
                while True:
                    event = json.loads(ws.recv(timeout=10))
                    if event["type"] == "notification.created" and event["data"]["id"] == nid:
                        latencies.append(time.perf_counter() - sent)
                        break
    finally:
        proc.stop(signal.SIGINT)
    latencies.sort()
    assert latencies[len(latencies) // 2] <= 0.3, [round(x * 1000) for x in latencies]
