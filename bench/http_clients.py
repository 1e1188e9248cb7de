"""A/B of the HTTP clients a push POST can go through, in one process, rounds interleaved.

Run from the repository root::

    .venv/bin/python -m bench.http_clients                 # 5 rounds x 3,000 POSTs each
    .venv/bin/python -m bench.http_clients --rounds 7 --posts 2000

Against the channels benchmark's push peer (``bench/channels_peers.py``, its own process:
HTTP/1.1 keep-alive, 201 to every POST), one kept-alive connection each, the same body
and headers a push has (~400 bytes encrypted, VAPID ``Authorization``), one POST at a
time:

- ``http.client``: the standard library on one connection, the floor's POST in
  ``bench/channels.py`` (no policy, no pool);
- ``hand-written Http1Client``: ``clarion/channels/http1.py`` as it was before the one
  HTTP client replaced it, loaded from git (``--http1-from``, default: the commit before
  the one that removed it) with the ``outbound.py`` of that commit;
- ``clarion OutboundHttp (httpx)``: the channels' client today
  (``clarion/channels/httpclient.py``: httpx, the pinned-address backend, bounded drain);
- ``clarion FastPost``: push's fast path (``clarion/channels/fastpost.py``, http.client
  with the same behaviour);
- ``plain httpx.Client``: httpx with its own transport, for the cost of ours.

Each round runs every client once, in a rotated order, so load from other processes hits
them alike; the figures are the median and the range over the rounds: POSTs per second
(wall) and CPU ms per POST (``time.process_time`` of this process; the peer's CPU is not
in it).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import _common as common
from bench.channels_peers import Counters
from clarion.channels.fastpost import FastPost
from clarion.channels.httpclient import OutboundHttp
from clarion.channels.outbound import OutboundPolicy

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {
    "TTL": "86400",
    "Urgency": "normal",
    "Content-Encoding": "aes128gcm",
    "Authorization": "vapid t=" + "x" * 230 + ", k=" + "y" * 87,
}
BODY = os.urandom(420)


def removed_http1(rev: str | None) -> type:
    """``Http1Client`` from git, with the ``outbound.py`` it was written against."""
    if rev is None:
        removal = subprocess.check_output(
            ["git", "rev-list", "-1", "HEAD", "--", "clarion/channels/http1.py"],
            cwd=ROOT,
            text=True,
        ).strip()
        rev = f"{removal}^"

    def load(name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
        source = subprocess.check_output(["git", "show", f"{rev}:{path}"], cwd=ROOT, text=True)
        if replace:
            source = source.replace(*replace)
        file = Path(tempfile.mkdtemp(prefix="bench-http1-")) / f"{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    old_outbound = load("old_outbound", "clarion/channels/outbound.py")
    http1 = load(
        "old_http1",
        "clarion/channels/http1.py",
        ("from clarion.channels.outbound import", "from old_outbound import"),
    )
    http1.OldPolicy = old_outbound.OutboundPolicy
    return http1


def clients(url: str, rev: str | None) -> dict[str, tuple[Callable[[], int], Callable[[], None]]]:
    """name -> (one POST returning the status, close)."""
    allowed = ["127.0.0.0/8"]
    parts = httpx.URL(url)
    conn = http.client.HTTPConnection(parts.host, parts.port, timeout=10)

    def stdlib() -> int:
        conn.request("POST", parts.path, BODY, HEADERS)
        response = conn.getresponse()
        response.read()
        return response.status

    http1 = removed_http1(rev)
    old = http1.Http1Client(connect_timeout=5, read_timeout=10, policy=http1.OldPolicy(allowed))
    ours = OutboundHttp(OutboundPolicy(allowed), connect_timeout=5, read_timeout=10)
    fast = FastPost(OutboundPolicy(allowed), connect_timeout=5, read_timeout=10)
    plain = httpx.Client(trust_env=False, timeout=httpx.Timeout(10, connect=5))
    return {
        "http.client (the floor's POST)": (stdlib, conn.close),
        "hand-written Http1Client (removed)": (
            lambda: old.post(url, BODY, HEADERS).status,
            old.close,
        ),
        "clarion OutboundHttp (httpx)": (lambda: ours.post(url, BODY, HEADERS).status, ours.close),
        "clarion FastPost (push's fast path)": (
            lambda: fast.post(url, BODY, HEADERS).status,
            fast.close,
        ),
        "plain httpx.Client": (
            lambda: plain.post(url, content=BODY, headers=HEADERS).status_code,
            plain.close,
        ),
    }


def wait_port(port: int, peer: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and peer.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the push peer did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--posts", type=int, default=3000, help="POSTs per client per round")
    parser.add_argument("--http1-from", default=None, help="git revision holding http1.py")
    args = parser.parse_args()

    port = common.free_port()
    counters = Counters(Path(tempfile.mkdtemp(prefix="bench-http-")) / "push.counters", True)
    peer = subprocess.Popen(
        [sys.executable, "-m", "bench.channels_peers", "push", str(port), str(counters.path)],
        cwd=ROOT,
    )
    try:
        wait_port(port, peer)
        url = f"http://127.0.0.1:{port}/push/bench"
        todo = clients(url, args.http1_from)
        names = list(todo)
        for post, _ in todo.values():  # warm-up: connect, first imports
            for _ in range(200):
                assert post() == 201
        rates: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                post = todo[name][0]
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.posts):
                    post()
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                rates[name].append(args.posts / seconds)
                cpus[name].append(cpu / args.posts * 1000)
        expected = len(names) * (200 + args.rounds * args.posts)
        lost = expected - counters.accepted
        for _, close in todo.values():
            close()
    finally:
        peer.terminate()
        peer.wait(10)

    print(f"\n{args.rounds} rounds x {args.posts:,} POSTs per client (median, range over rounds)")
    print("| client | POSTs/s | CPU ms per POST |\n| --- | --- | --- |")
    for name in names:
        r, c = rates[name], cpus[name]
        print(
            f"| {name} | {statistics.median(r):,.0f} ({min(r):,.0f}–{max(r):,.0f}) "
            f"| {statistics.median(c):.3f} ({min(c):.3f}–{max(c):.3f}) |"
        )
    if lost:
        print(f"the peer accepted {lost} POSTs fewer than were sent")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
