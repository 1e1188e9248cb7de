"""What each held live stream keeps, by source line: ``clarion api`` under tracemalloc.

Starts the API with tracemalloc on, holds ``--connections`` idle WebSocket streams (after
a few warm-up ones, connected and closed), and compares a snapshot taken with them held
against one taken before; prints the bytes per connection of the lines that allocated the
most, by the innermost frame and by the innermost Clarion frame. Not under the benchmark
lock's rules for timings: it measures objects, not time (docs/benchmarks/stream.md).

    .venv/bin/python -m bench.stream_objects --connections 1500
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path

import psycopg
import websockets

from bench import _common as common
from clarion.core.auth import issue_user_token
from clarion.settings import Settings

DATABASE = "clarion_bench_stream_objects"

# Run in the child: tracemalloc on before anything is imported; SIGUSR1 writes a snapshot.
CHILD = """
import gc, os, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["TM_FRAMES"]))
taken = [0]
def dump(signum, frame):
    gc.collect()
    taken[0] += 1
    path = f"{os.environ['TM_OUT']}.{taken[0]}"
    tracemalloc.take_snapshot().dump(path)
    open(path + ".done", "w").close()
signal.signal(signal.SIGUSR1, dump)
from clarion.cli import main
sys.argv = ["clarion", "api", "--host", "127.0.0.1", "--port", sys.argv[1]]
main()
"""


async def _hold(proc, port: int, out: str, n: int, warm: int, path) -> list:
    async def snapshot(k: int) -> None:
        proc.send_signal(signal.SIGUSR1)
        while not os.path.exists(f"{out}.{k}.done"):
            await asyncio.sleep(0.2)

    async def one(rid: str):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}{path(rid)}", compression=None)
        await ws.recv()  # the first frame: the stream has begun
        return ws

    for ws in [await one(f"w-{i}") for i in range(warm)]:
        await ws.close()
    await asyncio.sleep(1)
    await snapshot(1)
    held = []
    for k in range(0, n, 100):
        held += await asyncio.gather(*(one(f"s-{i}") for i in range(k, min(n, k + 100))))
    await asyncio.sleep(1)
    await snapshot(2)
    for ws in held:
        await ws.close()
    return held


def _report(out: str, n: int, top: int) -> None:
    before, after = (tracemalloc.Snapshot.load(f"{out}.{k}") for k in (1, 2))
    stats = after.compare_to(before, "traceback")
    print(f"\n{sum(s.size_diff for s in stats) / n:,.0f} bytes per held connection in all")
    inner: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    for s in stats:
        frame = s.traceback[-1]
        inner[f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"] += s.size_diff
        marker = f"{os.sep}clarion{os.sep}"
        mine = [f for f in s.traceback if marker in f.filename]
        if mine:
            name = mine[-1].filename
            key = f"{name[name.rindex(marker) + 1 :]}:{mine[-1].lineno}"
        else:
            key = "(no Clarion frame)"
        ours[key] += s.size_diff
    for title, counts in (("innermost frame", inner), ("innermost Clarion frame", ours)):
        print(f"\nbytes per connection, by {title}:")
        for key, size in counts.most_common(top):
            print(f"  {size / n:8,.0f}  {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--frames", type=int, default=10, help="traceback depth")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    common.raise_fd_limit()
    env = common.fresh_run(DATABASE, "WARNING")
    n = args.connections
    with psycopg.connect(common.pg_url(DATABASE)) as conn:
        conn.execute(
            "INSERT INTO subscribers (id, data, seq, created_at, updated_at) SELECT id, '{}', 0,"
            " now(), now() FROM unnest(%s::text[]) id",
            [[f"s-{i}" for i in range(n)] + [f"w-{i}" for i in range(args.warmup)]],
        )
    settings = Settings()

    def path(rid: str) -> str:
        return f"/v1/me/stream?token={issue_user_token(settings, rid)}"

    with tempfile.TemporaryDirectory() as tmp, common.Processes() as procs:
        out, port = str(Path(tmp) / "snapshot"), common.free_port()
        child = {**env, "TM_OUT": out, "TM_FRAMES": str(args.frames)}
        proc = procs.start("api", [sys.executable, "-c", CHILD, str(port)], child)
        common.wait_http(f"http://127.0.0.1:{port}/readyz", procs, timeout=180)
        asyncio.run(_hold(proc, port, out, n, args.warmup, path))
        procs.stop(proc)
        _report(out, n, args.top)


if __name__ == "__main__":
    main()
