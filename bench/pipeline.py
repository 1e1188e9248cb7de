"""End-to-end pipeline benchmark: POST /v1/notifications -> persisted inbox row.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.pipeline                 # ~1 minute
    .venv/bin/python -m bench.pipeline --duration 60   # longer, steadier figures

What it does, in one run on one machine:

1. Baseline: a no-op Celery task (bench/noop_app.py: Clarion's own Celery configuration,
   same broker, prefork pool, same concurrency). N tasks are enqueued, then a worker is
   started and drains them; rate = tasks / (time of last task - time of first task).
2. Pipeline: ``clarion worker`` (prefork) and ``clarion api`` run as subprocesses; an async
   httpx client keeps ``--connections`` POSTs in flight (optionally paced with ``--rate``)
   for ``--duration`` seconds per shape: 1 recipient per POST, then 10. A separate process
   subscribed to the Redis channel ``clarion:events`` timestamps each notification id; the
   worker publishes right after its commit, so that is when the row became visible.

Figures per shape: sustained notifications/s = rows / (last row's event - first POST),
p50/p99 latency = event time - the time its POST was sent, ratio = notifications/s over the
no-op tasks/s, CPU per process group as percent of one core, and a SQL check that every
accepted notification is in the ``notifications`` table (nothing lost).
Targets (DESIGN.md "Throughput"): >= 500 notifications/s and >= 0.4 x the no-op baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
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
from clarion.core.pubsub import CHANNEL

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
    worker = procs.start(
        "noop-worker",
        [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q", noop_app.QUEUE,
         "--pool", "prefork", "--concurrency", str(args.worker_concurrency),
         "--loglevel", args.log_level, "--hostname", "bench-noop@%h"],
        env,
    )
    deadline = time.monotonic() + args.timeout
    while client.get(noop_app.LAST) is None:
        procs.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no-op worker did {client.get(noop_app.COUNTER)} of {total}")
        time.sleep(0.05)
    first, last = float(client.get(noop_app.FIRST)), float(client.get(noop_app.LAST))
    procs.stop(worker)
    rate = (total - 1) / (last - first)
    print(f"no-op baseline: {total} tasks enqueued at {enqueue_rate:,.0f}/s, drained by "
          f"prefork x{args.worker_concurrency} at {rate:,.0f} tasks/s "
          f"(completion signal: one Redis INCR per task; first->last task)")
    return rate


# --- the live-event listener (its own process, so timestamps don't wait on the client) ---


def listen(url: str, ready, counter, conn) -> None:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL, STOP)
    ready.set()
    seen: list[tuple[str, float]] = []
    for message in pubsub.listen():
        now = time.time()
        if message["channel"] == STOP.encode():
            break
        event = json.loads(message["data"])
        if event.get("type") == "notification.created":
            seen.append((event["data"]["id"], now))
            counter.value += 1
    conn.send(seen)


# --- load ---------------------------------------------------------------------------------


@dataclass
class Load:
    recipients: int
    sent_at: dict[str, float] = field(default_factory=dict)  # notification id -> POST sent
    post_latency: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    start: float = 0.0
    end: float = 0.0
    cpu: str = ""


async def drive(base: str, key: str, load: Load, pool: list[str], args) -> None:
    """Keep ``connections`` POSTs in flight until the duration or the POST count is reached."""
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as http:
        load.start = time.time()
        deadline = load.start + args.duration
        issued = 0

        async def connection() -> None:
            nonlocal issued
            while issued < args.max_posts:
                slot, issued = issued, issued + 1
                if args.rate:  # open loop: POST number k is due at start + k / rate
                    await asyncio.sleep(max(0.0, load.start + slot / args.rate - time.time()))
                if time.time() >= deadline:
                    return
                body = {
                    "recipients": random.sample(pool, load.recipients),
                    "category": "bench",
                    "type": "load",
                    "title": "Benchmark notification",
                    "body": "Sent by bench/pipeline.py",
                }
                sent = time.time()
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


def report(load: Load, events: dict[str, float], noop_rate: float, db_url: str) -> bool:
    accepted = len(load.sent_at)
    latencies = [events[i] - t for i, t in load.sent_at.items() if i in events]
    posts = len(load.post_latency)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM notifications WHERE id = ANY(%s::uuid[])", [list(load.sent_at)]
        ).fetchone()[0]
    print(f"\n{load.recipients} recipient(s) per POST, {posts:,} POSTs accepted "
          f"({posts / (load.end - load.start):,.0f} POST/s, 202 p50 "
          f"{common.ms(common.percentile(load.post_latency, 50))} p99 "
          f"{common.ms(common.percentile(load.post_latency, 99))})"
          + (f", errors {dict(load.errors)}" if load.errors else ""))
    if not latencies:
        print("  no events received")
        return False
    wall = max(events[i] for i in load.sent_at if i in events) - load.start
    rate = len(latencies) / wall
    ratio = rate / noop_rate
    print(f"  notifications accepted {accepted:,}, rows in PostgreSQL {rows:,}, "
          f"events received {len(latencies):,} -> {'nothing lost' if rows == accepted else 'LOST ROWS'}")
    print(f"  sustained {rate:,.0f} notifications/s over {wall:.1f} s (first POST -> last row)")
    print(f"  latency POST -> row: p50 {common.ms(common.percentile(latencies, 50))}, "
          f"p99 {common.ms(common.percentile(latencies, 99))}, "
          f"max {common.ms(max(latencies))}")
    print(f"  no-op baseline {noop_rate:,.0f} tasks/s -> ratio {ratio:.2f}")
    print(f"  CPU (% of one core, 2 cores = 200%): {load.cpu}")
    met = rate >= TARGET_RATE and ratio >= TARGET_RATIO and rows == accepted
    print(f"  target >= {TARGET_RATE:.0f}/s and >= {TARGET_RATIO} x baseline: "
          f"{'MET' if met else 'NOT MET'}")
    return met


def run(args: argparse.Namespace) -> int:
    env = common.clarion_env(DATABASE, args.log_level)
    db_url = common.pg_url(DATABASE)
    common.reset_database(DATABASE)
    common.flush_redis()
    common.clarion("migrate", env=env)
    key = common.clarion("keys", "create", "bench", "--scope", "notify", env=env).split()[-1]
    pool = [f"user-{i}" for i in range(args.subscribers)]
    with psycopg.connect(db_url) as conn:  # recipients exist already, as in real use
        conn.execute(
            "INSERT INTO subscribers (id, data, seq, created_at, updated_at) "
            "SELECT 'user-' || g, '{}', 0, now(), now() FROM generate_series(0, %s) g",
            [args.subscribers - 1],
        )
    ctx = mp.get_context("fork")
    counter, ready = ctx.RawValue("q", 0), ctx.Event()
    receiver, sender = ctx.Pipe(duplex=False)
    listener = None
    with common.Processes() as procs:
        print(f"logs: {procs.logdir}")
        noop_rate = noop_baseline(procs, env, args)
        port = common.free_port()
        clarion = str(common.BIN / "clarion")
        worker = procs.start(
            "worker",
            [clarion, "worker", "--concurrency", str(args.worker_concurrency), "--pool", "prefork",
             "--queues", "create,deliver.in_app", "--hostname", "bench-clarion@%h"],
            env,
        )
        api = procs.start(
            "api",
            [clarion, "api", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(args.api_workers)],
            env,
        )
        base = f"http://127.0.0.1:{port}"
        common.wait_http(f"{base}/readyz", procs)
        listener = ctx.Process(
            target=listen, args=(f"{common.REDIS}/{common.PUBSUB_DB}", ready, counter, sender)
        )
        try:
            listener.start()
            ready.wait(10)
            groups = {"api": api.pid, "worker": worker.pid}
            warm = Load(recipients=1)
            warm_args = argparse.Namespace(**{**vars(args), "max_posts": args.warmup, "rate": 0})
            asyncio.run(drive(base, key, warm, pool, warm_args))
            expected = len(warm.sent_at)
            wait_for_events(counter, expected, procs, args.stall)
            loads = []
            for recipients in args.shapes:
                load = Load(recipients=recipients)
                before = common.cpu_snapshot(groups)
                asyncio.run(drive(base, key, load, pool, args))
                expected += len(load.sent_at)
                wait_for_events(counter, expected, procs, args.stall)
                load.cpu = common.cpu_report(before, common.cpu_snapshot(groups),
                                             time.time() - load.start)
                loads.append(load)
            redis.Redis.from_url(f"{common.REDIS}/{common.PUBSUB_DB}").publish(STOP, "stop")
            if not receiver.poll(30):
                raise TimeoutError("the event listener did not answer")
            events = dict(receiver.recv())
        finally:
            if listener.is_alive():
                listener.terminate()
            listener.join(5)
        results = [report(load, events, noop_rate, db_url) for load in loads]
    return 0 if all(results) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds of load per shape")
    parser.add_argument("--max-posts", type=int, default=200_000, help="POST cap per shape")
    parser.add_argument("--shapes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 10], help="recipients per POST, comma-separated")
    parser.add_argument("--connections", type=int, default=16, help="POSTs in flight")
    parser.add_argument("--rate", type=float, default=0, help="POSTs/s to offer (0: no pacing)")
    parser.add_argument("--subscribers", type=int, default=10_000, help="recipient pool size")
    parser.add_argument("--noop-tasks", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured POSTs first")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--log-level", default="WARNING", help="CLARION_LOG_LEVEL, both workers")
    parser.add_argument("--timeout", type=float, default=120, help="no-op drain limit (s)")
    parser.add_argument("--stall", type=float, default=20, help="give up after s without events")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
