"""The pipeline benchmark's load generators: an async httpx client, and wrk with bench/post.lua.

Both POST the same bodies to ``/v1/notifications``: ``recipients`` distinct ids drawn at
random from the pre-created pool ``<prefix>0 .. <prefix><pool - 1>``, category ``bench``,
type ``load``, the same title and body.

- httpx (:func:`drive`): keeps ``--connections`` POSTs in flight, or paces them (open
  loop), and records every accepted notification id with the time its POST was sent or
  due, which the per-id latency needs. It costs ~2.5 ms of CPU per POST, so on 2 cores
  it competes with Clarion and caps at a few hundred POST/s.
- wrk (:func:`run_wrk`): closed loop at ``--connections``, in C, for the saturation
  phase. It hands back no ids: post.lua counts the POSTs written and the answers per
  status, and wrk reports its own rate and latency distribution.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import _common as common

LUA = Path(__file__).resolve().parent / "post.lua"


@dataclass
class Load:
    recipients: int
    label: str
    offered: float  # POST/s, 0 = closed loop
    connections: int
    generator: str = "httpx"
    sent_at: dict[str, float] = field(default_factory=dict)  # notification id -> POST sent
    post_latency: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    start: float = 0.0
    end: float = 0.0  # last POST answered
    done: float = 0.0  # end of the CPU accounting: this phase's events all received
    last_row: float = 0.0  # time of this phase's last event (the last row persisted)
    cpu: str = ""
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group
    wrk: dict | None = None  # wrk phases: post.lua's counts and wrk's figures
    rows: int = 0  # wrk phases: rows created in the phase (SQL count after - before)
    events: int = 0  # wrk phases: events received in the phase
    during: int = 0  # wrk phases: events received while wrk ran


# --- httpx ------------------------------------------------------------------------------


async def drive(base: str, key: str, load: Load, pool: list[str], args) -> None:
    """Keep ``connections`` POSTs in flight until the duration or the POST count is reached."""
    n = args.connections
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as http:
        load.start = time.time()
        deadline = load.start + args.duration
        issued = 0

        async def connection() -> None:
            nonlocal issued
            while issued < args.max_posts:
                slot, issued = issued, issued + 1
                due = time.time()
                if args.rate:  # open loop: POST number k is due at start + k / rate
                    due = load.start + slot / args.rate
                    await asyncio.sleep(max(0.0, due - time.time()))
                if time.time() >= deadline:
                    return
                body = {
                    "recipients": random.sample(pool, load.recipients),
                    "category": "bench",
                    "type": "load",
                    "title": "Benchmark notification",
                    "body": "Sent by bench/pipeline.py",
                }
                sent = due if args.rate else time.time()  # a late POST counts from when due
                try:
                    response = await http.post("/v1/notifications", json=body)
                except httpx.HTTPError as exc:
                    load.errors[type(exc).__name__] += 1
                    continue
                if response.status_code != 202:
                    load.errors[f"HTTP {response.status_code}"] += 1
                    continue
                load.post_latency.append(time.time() - sent)
                for item in response.json()["notifications"]:
                    load.sent_at[item["id"]] = sent

        await asyncio.gather(*(connection() for _ in range(args.connections)))
        load.end = time.time()


# --- wrk --------------------------------------------------------------------------------


def find_wrk() -> str | None:
    """wrk on PATH, else /usr/bin/wrk (Debian package ``wrk``), else None."""
    found = shutil.which("wrk")
    if found:
        return found
    return "/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None


def run_wrk(procs: common.Processes, wrk: str, base: str, load: Load, pool: tuple, args) -> float:
    """Run wrk for ``--duration`` s; fill ``load.wrk``; return wrk's CPU seconds.

    wrk runs in its own process group like every other process. It is reaped here with
    ``wait4`` for its own CPU time: once reaped, that time is added to this process's
    children's time, which the CPU report would otherwise count as "harness".
    """
    key, prefix, size = pool
    env = {
        **os.environ,
        "CLARION_BENCH_KEY": key,
        "CLARION_BENCH_PREFIX": prefix,
        "CLARION_BENCH_POOL": str(size),
        "CLARION_BENCH_RECIPIENTS": str(load.recipients),
    }
    seconds = max(1, round(args.duration))
    argv = [wrk, f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{seconds}s"]
    argv += ["--timeout", "30s", "--latency", "-s", str(LUA), base]
    name = f"wrk-{load.recipients}"
    proc = procs.start(name, argv, env)
    deadline = time.monotonic() + seconds + 60
    status, usage = 0, None
    while usage is None:  # not procs.check_alive(): its poll() would reap wrk first
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            usage = rusage
        elif time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    procs.stop(proc)  # forget it (the group is gone already)
    load.end = time.time()
    output = (procs.logdir / f"{name}.log").read_text(errors="replace")
    line = next((x for x in output.splitlines() if x.startswith("bench-json ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{output[-3000:]}")
    load.wrk = json.loads(line.removeprefix("bench-json "))
    return usage.ru_utime + usage.ru_stime


def wrk_lines(load: Load) -> tuple[list[str], bool, float]:
    """Report lines for a wrk phase; whether nothing was lost or refused; notifications/s."""
    w, r = load.wrk or {}, load.recipients
    status = {int(k): v for k, v in w["status"].items()}
    accepted, written = status.get(202, 0), w["requests"]
    other = {k: v for k, v in status.items() if k != 202}
    errors = {k: v for k, v in w["errors"].items() if v and k != "status"}
    seconds = w["duration_us"] / 1e6
    lat = {k: v / 1000 for k, v in w["latency_us"].items()}
    lines = [
        f"  wrk: {w['completed']:,} answers in {seconds:.2f} s = {w['completed'] / seconds:,.0f}"
        f" requests/s; latency mean {lat['mean']:.2f} ms, stdev {lat['stdev']:.2f} ms, p50 "
        f"{lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms, p99.9 "
        f"{lat['p99.9']:.2f} ms, max {lat['max']:.2f} ms",
        f"  POSTs: {written:,} written, {accepted:,} answered 202"
        + (f", other statuses {other}" if other else ", no other status")
        + (f", socket errors {errors}" if errors else ", no socket error")
        + f"; {written - sum(status.values()):,} in flight when wrk stopped (answers not read)",
    ]
    low, high = accepted * r, written * r
    lost = load.rows < low
    verdict = "MISSING ROWS" if lost else "nothing lost"
    if load.rows > high or load.rows % r:
        verdict += ", UNEXPECTED EXTRA ROWS"
    lines.append(
        f"  rows created in this phase (SQL count(*) after - before) {load.rows:,}, events "
        f"{load.events:,}; check: 202s x {r} = {low:,} <= rows <= written x {r} = {high:,}"
        f" and rows a multiple of {r}: {verdict}"
    )
    ok = not lost and not other and not errors and load.events == load.rows
    if load.events != load.rows:
        lines.append(f"  !! {load.rows - load.events:,} rows without an event")
    if not load.rows:
        return lines, False, 0.0
    wall, ran = load.last_row - load.start, load.end - load.start
    rate = load.rows / wall
    lines += [
        f"  sustained {rate:,.0f} notifications/s over {wall:.1f} s (wrk start -> last row)",
        f"  of which persisted while wrk ran: {load.during:,} in {ran:.1f} s = "
        f"{load.during / ran:,.0f}/s (API and worker sharing the cores; the rest drained "
        f"after, the worker alone: {(wall - ran):.1f} s)",
        "  latency POST -> row: not measured (wrk hands back no ids; see the paced phase)",
    ]
    return lines, ok, rate
