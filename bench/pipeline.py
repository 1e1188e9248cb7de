"""End-to-end pipeline benchmark: POST /v1/notifications -> persisted inbox row.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.pipeline                 # ~1.5 minutes
    .venv/bin/python -m bench.pipeline --duration 30   # longer, steadier figures

What it does, in one run on one machine:

1. Baseline: a no-op Celery task (bench/noop_app.py: Clarion's own Celery configuration,
   same broker, prefork pool, same concurrency). N tasks are enqueued, then a worker is
   started and drains them; rate = tasks / (time of last task - time of first task).
2. Pipeline: ``clarion worker`` (prefork) and ``clarion api`` run as subprocesses. For each
   shape (1 recipient per POST, then 10) two phases of ``--duration`` seconds run:
   saturation (``--connections`` POSTs always in flight; by wrk with bench/post.lua when
   wrk is installed, see ``--load-generator``), then a paced open-loop phase by an async
   httpx client at ``--latency-load`` x the saturation rate, where latency means something
   (at saturation it is mostly queueing in the broker). A separate process subscribed to
   Clarion's Redis events channel timestamps each notification id; the worker publishes
   right after its commit, so that is when the row became visible.

Figures per phase: sustained notifications/s = rows / (last row's event - first POST),
CPU per process group as percent of one core, a check that nothing was lost, and at
saturation the ratio to the no-op. httpx phases: p50/p99 latency = event time - the time
its POST was sent (paced: was due); every accepted id must be in ``notifications``. wrk
phases: wrk's own rate and latency; the rows created in the phase must cover the 202s.
Targets: >= 500 notifications/s (DESIGN.md "Throughput") and >= 1.0 x the no-op baseline
(issue 18; DESIGN.md asked 0.4 x).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/pipeline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis

from bench import _common as common
from bench import loadgen
from bench.loadgen import Load
from bench.pipeline_report import report
from clarion.core.pubsub import channel_for, decode

DATABASE = "clarion_bench"
STOP = "clarion:bench:stop"


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
    groups = {"worker": worker.pid}
    cpu_first = done_first = None  # the worker's CPU and the count when the first task ran
    while client.get(noop_app.LAST) is None:
        procs.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no-op worker did {client.get(noop_app.COUNTER)} of {total}")
        if cpu_first is None and client.get(noop_app.FIRST) is not None:
            cpu_first = common.cpu_snapshot(groups)["worker"]
            done_first = int(client.get(noop_app.COUNTER))
        time.sleep(0.05)
    cpu_last = common.cpu_snapshot(groups)["worker"]
    first, last = float(client.get(noop_app.FIRST)), float(client.get(noop_app.LAST))
    procs.stop(worker)
    rate = (total - 1) / (last - first)
    # CPU from the poll that saw the first task (start-up excluded) to the one that saw the
    # last: the worker's main process and its prefork children, per task run in between.
    per_task = (cpu_last - (cpu_first or 0.0)) / max(1, total - (done_first or 0))
    print(
        f"no-op baseline: {total} tasks enqueued at {enqueue_rate:,.0f}/s, drained by "
        f"prefork x{args.worker_concurrency} at {rate:,.0f} tasks/s "
        f"(completion signal: one Redis INCR per task; first->last task); "
        f"worker CPU {per_task * 1000:.2f} ms per task"
    )
    return rate


# --- the live-event listener (its own process, so timestamps don't wait on the client) ---


def listen(url: str, prefix: str, ready, counter, last, conn) -> None:
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
        for event in decode(message["data"]):  # one message per published batch
            if event.get("type") == "notification.created" and event["recipient"].startswith(
                prefix
            ):
                seen.append((event["data"]["id"], now))
                last.value = now
                counter.value += 1
    conn.send(seen)


# --- phases -------------------------------------------------------------------------------


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


class Pipeline:
    """The running worker, API and listener, and the phases run against them."""

    def __init__(self, procs, env: dict, args, key: str, pool: list[str], prefix: str) -> None:
        self.procs, self.args, self.key, self.pool, self.prefix = procs, args, key, pool, prefix
        self.db_url = common.pg_url(DATABASE)
        self.broker = redis.Redis.from_url(f"{common.REDIS}/{common.BROKER_DB}")
        clarion = str(common.BIN / "clarion")
        worker_args = f"worker --concurrency {args.worker_concurrency} --pool prefork"
        worker_args += " --queues create --hostname bench-clarion@%h"
        worker = procs.start("worker", [clarion, *worker_args.split()], env)
        port = common.free_port()
        api_args = f"api --host 127.0.0.1 --port {port} --workers {args.api_workers}"
        api = procs.start("api", [clarion, *api_args.split()], env)
        self.groups = {"api": api.pid, "worker": worker.pid}
        self.base = f"http://127.0.0.1:{port}"
        common.wait_http(f"{self.base}/readyz", procs)
        ctx = mp.get_context("fork")
        self.counter, self.last, ready = ctx.RawValue("q", 0), ctx.RawValue("d", 0), ctx.Event()
        self.receiver, sender = ctx.Pipe(duplex=False)
        url = f"{common.REDIS}/{common.PUBSUB_DB}"
        listener_args = (url, prefix, ready, self.counter, self.last, sender)
        self.listener = ctx.Process(target=listen, args=listener_args)
        self.listener.start()
        ready.wait(10)
        self.expected = 0

    def phase(self, label: str, recipients: int, rate: float, posts: int | None = None) -> Load:
        """Drive one load, wait until its rows are all announced, account CPU."""
        args = argparse.Namespace(**vars(self.args))
        args.rate, args.max_posts = rate, posts or args.max_posts
        load = Load(recipients, label, rate, args.connections)
        before = common.cpu_snapshot(self.groups)
        asyncio.run(loadgen.drive(self.base, self.key, load, self.pool, args))
        self.expected += len(load.sent_at)
        wait_for_events(self.counter, self.expected, self.procs, args.stall)
        load.done, load.last_row = time.time(), self.last.value
        load.cpu = common.cpu_report(
            before, common.cpu_snapshot(self.groups), load.done - load.start
        )
        return load

    def rows(self) -> int:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute("SELECT count(*) FROM notifications").fetchone()[0]

    def settle(self) -> int:
        """The row count once the ``create`` queue is empty, no task is unacknowledged and
        the count held for 1 s (or after ``--stall`` s, with a warning)."""
        rows, deadline = -1, time.monotonic() + self.args.stall
        while time.monotonic() < deadline:
            self.procs.check_alive()
            previous, rows = rows, self.rows()
            queued = self.broker.llen("create") + self.broker.hlen("unacked")
            if rows == previous and not queued:
                return rows
            time.sleep(1)
        print(f"  !! rows or the create queue still changing after {self.args.stall} s")
        return rows

    def wrk_phase(self, wrk: str, recipients: int) -> Load:
        """Saturate with wrk; count the rows created until the create queue drained."""
        load = Load(recipients, "saturation", 0, self.args.connections, "wrk")
        rows, events = self.rows(), self.counter.value
        before = common.cpu_snapshot(self.groups)
        load.start = time.time()
        pool = (self.key, self.prefix, len(self.pool))
        wrk_cpu = loadgen.run_wrk(self.procs, wrk, self.base, load, pool, self.args)
        load.during = self.counter.value - events
        accepted = load.wrk["status"].get("202", 0)
        wait_for_events(self.counter, events + accepted * recipients, self.procs, self.args.stall)
        load.done, after = time.time(), common.cpu_snapshot(self.groups)
        after["harness"] -= wrk_cpu  # reaped, so counted in this process's children's time
        before["wrk"], after["wrk"] = 0.0, wrk_cpu
        load.cpu = common.cpu_report(before, after, load.done - load.start)
        load.cpu_s = {k: after[k] - before[k] for k in self.groups}
        load.rows = self.settle() - rows
        # POSTs in flight when wrk stopped may add rows beyond the 202s: their events too.
        wait_for_events(self.counter, events + load.rows, self.procs, 5)
        load.events, load.last_row = self.counter.value - events, self.last.value
        self.expected = self.counter.value
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


def saturation_generator(args: argparse.Namespace) -> str | None:
    """The wrk binary that loads the saturation phases, or None for the httpx client."""
    wrk = loadgen.find_wrk()
    if args.load_generator == "wrk" and (not wrk or args.rate):
        sys.exit("--load-generator wrk: " + ("wrk has no --rate" if wrk else "wrk not found"))
    if args.load_generator == "httpx" or (args.rate and not args.load_generator):
        print("saturation load: the httpx client (" + ("--rate" if args.rate else "as asked") + ")")
        return None
    if not wrk:
        print(
            "note: wrk not found (apt-get install wrk), so the httpx client loads the saturation"
            "\n  phases; at ~2.5 ms CPU per POST on 2 cores it caps near 250 POST/s, which "
            "measures\n  the harness more than Clarion at 1 recipient per POST"
        )
        return None
    print(f"saturation load: {wrk} with bench/post.lua; paced phases: the httpx client")
    return wrk


def run(args: argparse.Namespace) -> int:
    wrk = saturation_generator(args)
    env = common.fresh_run(DATABASE, args.log_level)
    db_url = common.pg_url(DATABASE)
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
                if wrk:
                    saturation = pipeline.wrk_phase(wrk, recipients)
                else:
                    saturation = pipeline.phase("saturation", recipients, args.rate)
                loads.append(saturation)
                rows = saturation.rows if wrk else len(saturation.sent_at)
                if args.latency_load and rows:  # latency below saturation: paced, open loop
                    persisted = rows / (saturation.last_row - saturation.start)
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
    add("--max-posts", type=int, default=200_000, help="POST cap per httpx phase")
    add("--shapes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10],
        help="recipients per POST, comma-separated (default 1,10)")  # fmt: skip
    add("--connections", type=int, default=16, help="POSTs in flight")
    add("--load-generator", choices=["httpx", "wrk"],
        help="for the saturation phases (default: wrk if installed, else httpx)")  # fmt: skip
    add("--wrk-threads", type=int, default=1, help="wrk threads (-t)")
    add("--rate", type=float, default=0, help="POST/s offered at saturation (0: closed loop)")
    add("--latency-load", type=float, default=0.2,
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
