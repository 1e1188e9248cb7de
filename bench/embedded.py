"""Embedded mode (``clarion dev``): POST → event on the live stream, and idle CPU.

Run from the repository root (no services needed)::

    .venv/bin/python -m bench.embedded              # 50 sends, 20 s idle: ~40 s
    .venv/bin/python -m bench.embedded --sends 200 --idle 60

Steps:

1. ``clarion dev`` in a fresh temporary data directory on a free port; the banner gives
   the API key and the dev user's token.
2. Idle CPU: the process group's CPU time (utime + stime from /proc) over ``--idle``
   seconds with one WebSocket open and nothing sent: what the worker's broker polling,
   beat and the hub cost while nothing happens.
3. Latency: ``--sends`` POSTs to the dev user, one at a time, each after a random pause
   (so sends do not line up with a polling interval); latency = the ``notification.created``
   event for that id on the WebSocket - the moment its POST was sent.

Target (issue 14): POST → bell <= 300 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/embedded.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from websockets.sync.client import connect as ws_connect

from bench import _common as common

TARGET = 0.300


def _group_cpu(pgid: int) -> float:
    return sum(secs for _pid, _comm, group, secs in common._proc_stats() if group == pgid)


def start(procs: common.Processes, data: Path) -> tuple[str, str, str, int]:
    port = common.free_port()
    argv = [str(common.BIN / "clarion"), "dev", "--data-dir", str(data), "--port", str(port)]
    proc = procs.start(
        "dev", argv, {"PATH": str(common.BIN), "HOME": str(data), "PYTHONPATH": str(common.ROOT)}
    )
    log = procs.logdir / "dev.log"
    deadline = time.monotonic() + 60
    while "user token:" not in log.read_text(errors="replace"):
        procs.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("no dev banner after 60 s")
        time.sleep(0.1)
    out = log.read_text(errors="replace")
    key = re.search(r"API key:\s+(\S+)", out).group(1)
    token = re.search(r"user token:\s+(\S+)", out).group(1)
    base = f"http://127.0.0.1:{port}"
    common.wait_http(f"{base}/readyz", procs)
    return base, key, token, proc.pid


def measure(base: str, key: str, token: str, pgid: int, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    ws_url = base.replace("http://", "ws://") + f"/v1/me/stream?token={token}"
    with ws_connect(ws_url) as ws, httpx.Client(base_url=base, timeout=10) as http:
        json.loads(ws.recv(timeout=10))  # unread_count: connected
        time.sleep(2)  # start-up work (first beat ticks) out of the idle figure
        cpu0, t0 = _group_cpu(pgid), time.monotonic()
        time.sleep(args.idle)
        idle = 100 * (_group_cpu(pgid) - cpu0) / (time.monotonic() - t0)
        print(f"idle: {idle:.1f}% of one core over {args.idle:.0f} s (clarion dev, one stream)")
        latencies = []
        headers = {"Authorization": f"Bearer {key}"}
        for i in range(args.sends):
            time.sleep(rng.uniform(0.05, 0.25))
            body = {"recipients": ["dev-user"], "category": "bench", "title": f"n{i}"}
            sent = time.perf_counter()
            nid = http.post("/v1/notifications", json=body, headers=headers).json()
            nid = nid["notifications"][0]["id"]
            while True:
                event = json.loads(ws.recv(timeout=10))
                if event["type"] == "notification.created" and event["data"]["id"] == nid:
                    latencies.append(time.perf_counter() - sent)
                    break
    p50, p99 = common.percentile(latencies, 50), common.percentile(latencies, 99)
    worst = max(latencies)
    print(
        f"POST -> notification.created on the stream, n={len(latencies)}: p50 {common.ms(p50)}"
        f"  p99 {common.ms(p99)}  max {common.ms(worst)}"
    )
    met = p99 <= TARGET
    print(f"target: p99 <= {common.ms(TARGET)} -> {'MET' if met else 'NOT MET'}")
    return 0 if met or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=50)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU sampling")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    common.warn_if_busy()
    with (
        tempfile.TemporaryDirectory(prefix="clarion-bench-dev-") as data,
        common.Processes() as procs,
    ):
        base, key, token, pid = start(procs, Path(data))
        code = measure(base, key, token, pid, args)
    sys.exit(code)


if __name__ == "__main__":
    main()
