"""End-to-end pipeline benchmark: POST /v1/notifications -> persisted inbox row.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.pipeline                 # ~1.5 minutes
    .venv/bin/python -m bench.pipeline --duration 30   # longer, steadier figures

What it does, in one run on one machine:

1. Baseline: a no-op Celery task (bench/noop_app.py: Clarion's own Celery configuration,
   same broker, prefork pool, same concurrency). N tasks are enqueued, then a worker is
   started and drains them; rate = tasks / (time of last task - time of first task).
2. Pipeline: ``clarion worker`` (prefork) and ``clarion api`` run as subprocesses. For each
   shape (1 recipient per POST, then 10) an async httpx client runs two phases of
   ``--duration`` seconds: saturation (``--connections`` POSTs always in flight), then a
   paced open-loop phase at ``--latency-load`` x the saturation rate, where latency means
   something (at saturation it is mostly queueing in the broker). A separate process
   subscribed to Clarion's Redis events channel timestamps each notification id; the
   worker publishes right after its commit, so that is when the row became visible.

Figures per phase: sustained notifications/s = rows / (last row's event - first POST),
p50/p99 latency = event time - the time its POST was sent (paced: was due), CPU per
process group as percent of one core, and a SQL check that every accepted notification is
in the ``notifications`` table (nothing lost); at saturation also the ratio to the no-op.
Targets (DESIGN.md "Throughput"): >= 500 notifications/s and >= 0.4 x the no-op baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/pipeline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg
import redis

from bench import _common as common
from clarion.core.pubsub import channel_for

DATABASE = "clarion_bench"
STOP = "clarion:bench:stop"
TARGET_RATE, TARGET_RATIO = 500.0, 0.4


# --- baseline: a no-op Celery task ------------------------------------------------------


def noop_baseline(procs: common.Processes, env: dict, args: argparse.Namespace) -> float:
    from bench import noop_app

    client = redis.Redis.from_url(f"{common.REDIS}/{common.PUBSUB_DB}")
    client.delete(noop_app.COUNTER, noop_app.FIRST, noop_app.LAST)
    total = args.noop_tasks
    started = time.perf_counter()
    with noop_app.app.producer_or_acquire() as producer:
        for _ in range(total):
            noop_app.noop.apply_async(args=[total], producer=producer)
    enqueue_rate = total / (time.perf_counter() - started)
    worker_args = f"-m celery -A bench.noop_app worker -Q {noop_app.QUEUE} --pool prefork"
    worker_args += f" --concurrency {args.worker_concurrency} --loglevel {args.log_level}"
    worker = procs.start("noop-worker", [sys.executable, *worker_args.split()], env)
    deadline = time.monotonic() + args.timeout
    while client.get(noop_app.LAST) is None:
        procs.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no-op worker did {client.get(noop_app.COUNTER)} of {total}")
        time.sleep(0.05)
    first, last = float(client.get(noop_app.FIRST)), float(client.get(noop_app.LAST))
    procs.stop(worker)
    rate = (total - 1) / (last - first)
    print(
        f"no-op baseline: {total} tasks enqueued at {enqueue_rate:,.0f}/s, drained by "
        f"prefork x{args.worker_concurrency} at {rate:,.0f} tasks/s "
        f"(completion signal: one Redis INCR per task; first->last task)"
    )
    return rate


# --- the live-event listener (its own process, so timestamps don't wait on the client) ---


def listen(url: str, prefix: str, ready, counter, conn) -> None:
    """Timestamp this run's events (only this run's recipients: the channel is shared with
    anything else that uses the same Redis database)."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel_for(url), STOP)
    ready.set()
    seen: list[tuple[str, float]] = []
    for message in pubsub.listen():
        now = time.time()
        if message["channel"] == STOP.encode():
            break
        event = json.loads(message["data"])
        if event.get("type") == "notification.created" and event["recipient"].startswith(prefix):
            seen.append((event["data"]["id"], now))
            counter.value += 1
    conn.send(seen)


# --- load ---------------------------------------------------------------------------------


@dataclass
class Load:
    recipients: int
    label: str
    offered: float  # POST/s, 0 = closed loop
    connections: int
    sent_at: dict[str, float] = field(default_factory=dict)  # notification id -> POST sent
    post_latency: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    start: float = 0.0
    end: float = 0.0  # last POST answered
    done: float = 0.0  # last event received
    cpu: str = ""


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


def wait_for_events(counter, expected: int, procs: common.Processes, stall: float) -> None:
    """Until ``expected`` events arrived, or none arrived for ``stall`` seconds."""
    last_value, last_change = counter.value, time.monotonic()
    while counter.value < expected:
        procs.check_alive()
        if counter.value != last_value:
            last_value, last_change = counter.value, time.monotonic()
        elif time.monotonic() - last_change > stall:
            print(f"  !! stalled at {counter.value} of {expected} events")
            return
        time.sleep(0.02)


def report(load: Load, events: dict[str, float], noop_rate: float, db_url: str) -> tuple:
    """Print one phase's figures; (nothing lost or refused, throughput targets met)."""
    accepted = len(load.sent_at)
    latencies = [events[i] - t for i, t in load.sent_at.items() if i in events]
    posts = len(load.post_latency)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM notifications WHERE id = ANY(%s::uuid[])", [list(load.sent_at)]
        ).fetchone()[0]
    if not load.post_latency:
        print(
            f"\n{load.recipients} recipient(s), {load.label}: no POST accepted {dict(load.errors)}"
        )
        return False, False
    offered = f"offered {load.offered:,.0f} POST/s" if load.offered else "closed loop"
    print(
        f"\n{load.recipients} recipient(s) per POST, {load.label} ({offered}, "
        f"{load.connections} connections): {posts:,} POSTs accepted at "
        f"{posts / (load.end - load.start):,.0f}/s, 202 in p50 "
        f"{common.ms(common.percentile(load.post_latency, 50))} p99 "
        f"{common.ms(common.percentile(load.post_latency, 99))}"
        + (f", errors {dict(load.errors)}" if load.errors else "")
    )
    if not latencies:
        print("  no events received")
        return False, False
    wall = max(events[i] for i in load.sent_at if i in events) - load.start
    rate, lost = len(latencies) / wall, accepted - rows
    print(
        f"  notifications accepted {accepted:,}, rows in PostgreSQL {rows:,}, events "
        f"{len(latencies):,}: {'nothing lost' if not lost else f'{lost:,} MISSING'}"
    )
    print(f"  sustained {rate:,.0f} notifications/s over {wall:.1f} s (first POST -> last row)")
    print(
        f"  latency POST -> row: p50 {common.ms(common.percentile(latencies, 50))}, "
        f"p99 {common.ms(common.percentile(latencies, 99))}, max {common.ms(max(latencies))}"
    )
    print(f"  CPU, % of one core (2 cores = 200%): {load.cpu}")
    ok = not lost and not load.errors
    if load.label != "saturation":
        return ok, True
    ratio = rate / noop_rate
    met = rate >= TARGET_RATE and ratio >= TARGET_RATIO
    print(
        f"  ratio to the no-op baseline ({noop_rate:,.0f} tasks/s): {ratio:.2f}\n"
        f"  target >= {TARGET_RATE:.0f} notifications/s and >= {TARGET_RATIO} x baseline: "
        f"{'MET' if met else 'NOT MET'}"
    )
    return ok, met


class Pipeline:
    """The running worker, API and listener, and the phases run against them."""

    def __init__(self, procs, env: dict, args, key: str, pool: list[str], prefix: str) -> None:
        self.procs, self.args, self.key, self.pool = procs, args, key, pool
        clarion = str(common.BIN / "clarion")
        worker_args = f"worker --concurrency {args.worker_concurrency} --pool prefork"
        worker_args += " --queues create,deliver.in_app --hostname bench-clarion@%h"
        worker = procs.start("worker", [clarion, *worker_args.split()], env)
        port = common.free_port()
        api_args = f"api --host 127.0.0.1 --port {port} --workers {args.api_workers}"
        api = procs.start("api", [clarion, *api_args.split()], env)
        self.groups = {"api": api.pid, "worker": worker.pid}
        self.base = f"http://127.0.0.1:{port}"
        common.wait_http(f"{self.base}/readyz", procs)
        ctx = mp.get_context("fork")
        self.counter, ready = ctx.RawValue("q", 0), ctx.Event()
        self.receiver, sender = ctx.Pipe(duplex=False)
        url = f"{common.REDIS}/{common.PUBSUB_DB}"
        self.listener = ctx.Process(target=listen, args=(url, prefix, ready, self.counter, sender))
        self.listener.start()
        ready.wait(10)
        self.expected = 0

    def phase(self, label: str, recipients: int, rate: float, posts: int | None = None) -> Load:
        """Drive one load, wait until its rows are all announced, account CPU."""
        args = argparse.Namespace(**vars(self.args))
        args.rate, args.max_posts = rate, posts or args.max_posts
        load = Load(recipients, label, rate, args.connections)
        before = common.cpu_snapshot(self.groups)
        asyncio.run(drive(self.base, self.key, load, self.pool, args))
        self.expected += len(load.sent_at)
        wait_for_events(self.counter, self.expected, self.procs, args.stall)
        load.done = time.time()
        load.cpu = common.cpu_report(
            before, common.cpu_snapshot(self.groups), load.done - load.start
        )
        return load

    def events(self) -> dict[str, float]:
        redis.Redis.from_url(f"{common.REDIS}/{common.PUBSUB_DB}").publish(STOP, "stop")
        if not self.receiver.poll(30):
            raise TimeoutError("the event listener did not answer")
        return dict(self.receiver.recv())

    def close(self) -> None:
        if self.listener.is_alive():
            self.listener.terminate()
        self.listener.join(5)


def run(args: argparse.Namespace) -> int:
    common.warn_if_busy()
    env = common.clarion_env(DATABASE, args.log_level)
    db_url = common.pg_url(DATABASE)
    common.reset_database(DATABASE)
    common.flush_redis()
    common.clarion("migrate", env=env)
    key = common.clarion("keys", "create", "bench", "--scope", "notify", env=env).split()[-1]
    prefix = f"bench-{os.getpid()}-"  # this run's recipients, to recognise this run's events
    pool = [f"{prefix}{i}" for i in range(args.subscribers)]
    with psycopg.connect(db_url) as conn:  # recipients exist already, as in real use
        conn.execute(
            "INSERT INTO subscribers (id, data, seq, created_at, updated_at) "
            "SELECT %s || g, '{}', 0, now(), now() FROM generate_series(0, %s) g",
            [prefix, args.subscribers - 1],
        )
    with common.Processes() as procs:
        print(f"process logs: {procs.logdir}")
        noop_rate = noop_baseline(procs, env, args)
        pipeline = Pipeline(procs, env, args, key, pool, prefix)
        try:
            pipeline.phase("warm-up", 1, 0, args.warmup)
            loads = []
            for recipients in args.shapes:
                saturation = pipeline.phase("saturation", recipients, args.rate)
                loads.append(saturation)
                if args.latency_load:  # latency below saturation: a paced, open-loop load
                    persisted = len(saturation.sent_at) / (saturation.done - saturation.start)
                    rate = args.latency_load * persisted / recipients
                    loads.append(
                        pipeline.phase(f"paced at {args.latency_load:.0%}", recipients, rate)
                    )
            events = pipeline.events()
        finally:
            pipeline.close()
    results = [report(load, events, noop_rate, db_url) for load in loads]
    ok, met = all(r[0] for r in results), all(r[1] for r in results)
    return 0 if ok and (met or not args.strict) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=10, help="seconds of load per phase")
    add("--max-posts", type=int, default=200_000, help="POST cap per phase")
    add("--shapes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10],
        help="recipients per POST, comma-separated (default 1,10)")  # fmt: skip
    add("--connections", type=int, default=16, help="POSTs in flight")
    add("--rate", type=float, default=0, help="POST/s offered at saturation (0: closed loop)")
    add("--latency-load", type=float, default=0.7,
        help="then a paced phase at this fraction of the saturation rate (0: skip)")  # fmt: skip
    add("--subscribers", type=int, default=10_000, help="recipient pool size")
    add("--noop-tasks", type=int, default=5000)
    add("--warmup", type=int, default=200, help="unmeasured POSTs first")
    add("--worker-concurrency", type=int, default=2, help="prefork processes, both workers")
    add("--api-workers", type=int, default=1)
    add("--log-level", default="WARNING", help="CLARION_LOG_LEVEL, both workers and the API")
    add("--timeout", type=float, default=120, help="no-op drain limit (s)")
    add("--stall", type=float, default=20, help="give up after s without events")
    add("--strict", action="store_true", help="exit 1 when a target is not met")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
