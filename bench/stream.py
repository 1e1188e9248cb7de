"""Live stream benchmark: idle WebSocket connections, broadcast fan-out, create -> client latency.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.stream              # ~3 minutes
    .venv/bin/python -m bench.stream --deflate    # clients offer permessage-deflate

Each figure has its baseline measured in the same run (DESIGN.md "Throughput", "Testing"):

1. Idle connections: ``--connections`` (10,000) WebSocket clients, spread over
   ``--client-procs`` client processes (bench/stream_peers.py), held by one process.
   RSS per connection = (VmRSS with N connections - VmRSS idle) / N, idle measured after
   ``--warmup-connections`` connected and closed. Baseline: a bare ``websockets`` server
   (asyncio, accepts and does nothing). Reference: a raw ASGI app on uvicorn. Clarion: one
   ``clarion api`` process; a client counts as connected once its first frame
   (``unread_count``) arrived, so the connect time includes the SQL per connection.
2. Fan-out: ``--broadcast-clients`` (5,000) of them stay connected. Baseline: the bare
   server sends the same-size JSON frame to all of them ``--rounds`` times
   (``websockets.broadcast``). Clarion: ``--rounds`` rounds of one ``notification.created``
   per recipient (consecutive cursors) are PUBLISHed to Redis, pipelined, at most
   ``--window`` rounds ahead of what the clients received (Redis drops a pub/sub client
   whose output buffer passes 32 MB). Frames/s = frames received / (first publish -> last
   frame), counted in the client processes.
3. Latency: ``clarion worker`` (prefork x2) and the API; ``--latency-clients`` recipients
   connected. POST /v1/notifications (1 recipient each, raw HTTP/1.1 client) open loop at
   ``--rate`` (200/s), closed loop (``--post-connections`` in flight) for the maximum, then
   open loop at ``--max-fraction`` (0.5) of that maximum. Latency per notification id =
   client receive time - the time its POST was sent (or was due, if it went out late).

4. Reconnect storm (bench/stream_restart.py): ``--connections`` clients with cursors, the
   API restarted under them (by default the listening socket handed to the new process,
   which serves before the old one gets SIGTERM: 1012), every client resumes; the same
   storm against the raw ASGI app is the reference.

Targets: >= 10,000 connections per process at <= 1.5 x the bare RSS per connection;
fan-out >= 0.7 x the bare broadcast rate; p99 create -> client <= 50 ms at 200/s; all
clients live again <= 5 s after a 1012 restart, >= 2,000 connections/s and >= 0.65 x the
raw ASGI app's rate, nothing missed and nothing twice.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing as mp
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/stream.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis
from websockets.sync.client import connect as ws_connect

from bench import _common as common
from bench import pipeline as pipeline_bench
from bench import stream_peers as peers
from bench import stream_restart
from bench.loadgen import Load
from bench.stream_report import received_rate, summary_3, summary_12
from clarion.core.auth import issue_user_token
from clarion.core.create import created_event
from clarion.core.pubsub import RedisPubSub, encode
from clarion.settings import Settings

DATABASE = "clarion_bench_stream"
PUBSUB_URL = f"{common.REDIS}/{common.PUBSUB_DB}"


def synthetic_rounds(recipients: list[str], rounds: int) -> list[list[dict]]:
    """``rounds`` x one notification.created per recipient, cursor = round (fresh: seq 0)."""
    now, out = datetime.now(UTC), []
    for cursor in range(1, rounds + 1):
        batch = []
        for rid in recipients:
            row = {"id": uuid.uuid4(), "recipient_id": rid, "seq": cursor, "category": "bench"}
            row |= {"type": "load", "severity": "medium", "title": "Benchmark notification"}
            row |= {"body": "Sent by bench/stream.py", "url": None, "actor_id": None}
            row |= {"meta": {}, "created_at": now}
            batch.append(created_event(row))
        out.append(batch)
    return out


class Run:
    """One benchmark run: the processes, the client pool, and the phases."""

    def __init__(self, procs, pool, args, env: dict, targets, warm, path) -> None:
        self.procs, self.pool, self.args, self.env = procs, pool, args, env
        self.targets, self.warm, self.path = targets, warm, path
        self.clarion = str(common.BIN / "clarion")

    def wait_frames(self, expected: int) -> None:
        """Until the clients received ``expected`` frames, or none arrived for --stall s."""
        seen, changed = self.pool.frames(), time.monotonic()
        while seen < expected:
            self.procs.check_alive()
            now = self.pool.frames()
            if now != seen:
                seen, changed = now, time.monotonic()
            elif time.monotonic() - changed > self.args.stall:
                print(f"  !! stalled at {seen:,} of {expected:,} frames")
                return
            time.sleep(0.002)

    # --- 1. idle connections ---------------------------------------------------------------

    def hold(self, label: str, port: int, pid: int, groups: dict, first: bool) -> tuple:
        """Connect and close the warm-up clients, read RSS idle; connect all, read RSS again.
        Returns (KiB per connection, connections held, seconds to connect them)."""
        pool, args = self.pool, self.args
        pool.connect(port, self.warm, args.parallel, first)
        pool.close("warm")
        time.sleep(args.settle)
        idle = common.rss_kib(pid)
        before = common.cpu_snapshot(groups)
        done = pool.connect(port, self.targets, args.parallel, first)
        wall = done["end"] - done["start"]
        cpu = common.cpu_report(before, common.cpu_snapshot(groups), wall)
        time.sleep(args.settle)
        rss, stats = common.rss_kib(pid), pool.stats()
        live, lat = stats["live"], done["latencies"]
        per = (rss - idle) / max(1, live)
        print(
            f"\n{label}: {live:,} of {len(self.targets):,} connections held"
            + (f", errors {dict(done['errors'])}" if done["errors"] else "")
            + (f", closed by the server {stats['closes']}" if stats["dropped"] else "")
            + f"\n  RSS idle {idle / 1024:,.1f} MiB, with {live:,} connections "
            f"{rss / 1024:,.1f} MiB: {per:.1f} KiB per connection"
            f"\n  connected in {wall:.1f} s = {len(lat) / wall:,.0f} connections/s "
            f"({args.client_procs} x {args.parallel} handshakes in flight); handshake -> "
            f"{'first frame' if first else '101'} p50 {common.ms(common.percentile(lat, 50))} "
            f"p99 {common.ms(common.percentile(lat, 99))}"
            f"\n  CPU while connecting, % of one core: {cpu}"
            f"\n  client processes: {pool.rss_kib() / 1024:,.0f} MiB RSS in all"
        )
        return per, live, wall

    # --- 2. broadcast fan-out --------------------------------------------------------------

    def fanout(self, label: str, expected: int, start, groups: dict) -> float:
        """Run ``start()`` (publish or trigger), wait for the frames; frames/s."""
        self.pool.each("reset")
        before, t0 = common.cpu_snapshot(groups), time.time()
        start()
        self.wait_frames(expected)
        stats = self.pool.stats()
        wall = stats["last"] - t0
        rate = stats["frames"] / wall if wall > 0 else 0.0
        after = common.cpu_snapshot(groups)
        cpu = common.cpu_report(before, after, time.time() - t0)
        per = common.cpu_per(before, after, max(1, stats["frames"]), "frame")
        lost = expected - stats["frames"]
        print(
            f"\n{label}: {stats['frames']:,} of {expected:,} frames in {wall:.2f} s = "
            f"{rate:,.0f} frames/s"
            + (f", {lost:,} MISSING" if lost else ", none missing")
            + (f", closed by the server {stats['closes']}" if stats["dropped"] else "")
            + f"\n  CPU, % of one core: {cpu}"
            + f"\n  CPU: {per}"
        )
        return rate

    def bare(self, frame: str, rounds: int, b: int) -> tuple:
        port = common.free_port()
        argv = [sys.executable, "-m", "bench.stream_peers", "bare", str(port)]
        server = self.procs.start("bare", argv, self.env)
        common.wait_port(port, self.procs)
        groups = {"bare": server.pid, "clients": self.pool.pgid}
        per, *_ = self.hold(
            "baseline: bare websockets server, idle", port, server.pid, groups, False
        )
        self.pool.close("b")
        stack = contextlib.ExitStack()  # connected before the clock starts
        control = stack.enter_context(
            ws_connect(f"ws://127.0.0.1:{port}/control", compression=None)
        )

        def start() -> None:
            with stack:
                control.send(json.dumps({"rounds": rounds, "frame": frame}))
                control.recv(60)

        rate = self.fanout("baseline: bare broadcast", rounds * b, start, groups)
        self.pool.close("a")
        self.procs.stop(server)
        return per, rate

    def floor(self) -> float:
        port = common.free_port()
        argv = [sys.executable, "-m", "uvicorn", "bench.stream_peers:asgi_floor", "--port"]
        argv += [str(port), "--lifespan", "off", "--log-level", "warning"]
        server = self.procs.start("asgi-floor", argv, self.env)
        common.wait_port(port, self.procs)
        groups = {"uvicorn": server.pid, "clients": self.pool.pgid}
        label = "reference: raw ASGI app on uvicorn (Clarion's server), idle"
        per, *_ = self.hold(label, port, server.pid, groups, True)
        self.pool.close("a", "b")
        self.procs.stop(server)
        return per

    def api(self) -> tuple[int, dict]:
        port = common.free_port()
        argv = [self.clarion, "api", "--host", "127.0.0.1", "--port", str(port)]
        api = self.procs.start("api", argv, self.env)
        common.wait_http(f"http://127.0.0.1:{port}/readyz", self.procs)
        return port, {"api": api.pid, "clients": self.pool.pgid}

    def clarion_fanout(self, port: int, groups: dict, rounds: list[list[str]]) -> tuple:
        per, held, wall = self.hold("clarion api, idle", port, groups["api"], groups, True)
        self.pool.close("b")
        # Encoded before the clock starts, as the bare server's frame is built before its
        # clock; then published as the worker's publish_many does, one pipeline per round.
        publisher, messages = RedisPubSub(PUBSUB_URL), [encode(batch) for batch in rounds]

        def start() -> None:
            for k, batch in enumerate(messages):
                self.wait_frames((k - self.args.window) * len(rounds[k]))
                publisher.publish_messages(batch)

        label = "clarion fan-out (Redis -> hub -> WebSocket)"
        rate = self.fanout(label, sum(map(len, rounds)), start, groups)
        self.pool.close("a")
        return per, held, wall, rate

    # --- 3. create -> client latency -------------------------------------------------------

    def latency(self, label: str, port, key, ids, rate: float, duration: float, groups) -> dict:
        """POST for ``duration`` s (open loop at ``rate``, closed loop if 0); the receive time
        of each notification id at the clients."""
        self.pool.each("reset", record=True)
        load = Load(1, label, rate, self.args.post_connections)
        before = common.cpu_snapshot(groups)
        peers.run(peers.post(port, key, ids, load, rate, duration))
        self.wait_frames(len(load.sent_at))
        stats = self.pool.stats()
        load.cpu = common.cpu_report(before, common.cpu_snapshot(groups), time.time() - load.start)
        return {"load": load, "stats": stats}

    @staticmethod
    def report(phase: dict, published: dict[str, float]) -> tuple:
        """Print one latency phase; (p99 create -> client, notifications/s received)."""
        load, stats = phase["load"], phase["stats"]
        received = {i: t for i, t in stats["ids"].items() if i in load.sent_at}
        posts, sent, span = len(load.post_latency), len(load.sent_at), load.end - load.start
        how = f"offered {load.offered:,.0f}/s" if load.offered else f"{load.connections} in flight"
        print(
            f"\n{load.label}: {posts:,} POSTs accepted at {posts / span:,.0f}/s ({how})"
            + (f", errors {dict(load.errors)}" if load.errors else "")
        )
        if not received:
            print("  no notification received")
            return float("inf"), 0.0, float("inf")
        lat, rate = [t - load.sent_at[i] for i, t in received.items()], received_rate(phase)
        pct = common.percentile
        print(
            f"  202 p50 {common.ms(pct(load.post_latency, 50))} p99 "
            f"{common.ms(pct(load.post_latency, 99))}; received {len(received):,} of {sent:,}"
            + (f" ({sent - len(received):,} MISSING)" if sent > len(received) else " (all)")
            + (f", closed by the server {stats['closes']}" if stats["dropped"] else "")
            + f", {rate:,.0f} notifications/s (first POST -> last frame)"
            f"\n  create -> client: p50 {common.ms(pct(lat, 50))}, p99 {common.ms(pct(lat, 99))}"
            f", max {common.ms(max(lat))}"
        )
        hops = [(published[i] - load.sent_at[i], t - published[i]) for i, t in received.items()
                if i in published]  # fmt: skip
        after = [h[1] for h in hops] or [float("nan")]
        if hops:
            before = [h[0] for h in hops]
            print(
                f"    of which POST -> published by the worker: p50 {common.ms(pct(before, 50))}"
                f", p99 {common.ms(pct(before, 99))}; published -> client (Redis, hub, "
                f"WebSocket): p50 {common.ms(pct(after, 50))}, p99 {common.ms(pct(after, 99))}"
            )
        print(f"  CPU, % of one core: {load.cpu}")
        if load.offered and posts / span < 0.95 * load.offered:
            print("  !! the POST client fell behind the offered rate: latency includes its lag")
        return pct(lat, 99), rate, pct(after, 99)

    def pipeline(self, port: int, groups: dict, ids: list[str], path) -> tuple:
        args = self.args
        argv = ["worker", "--concurrency", "2", "--pool", "prefork"]
        argv += ["--queues", "create"]
        groups["worker"] = self.procs.start("worker", [self.clarion, *argv], self.env).pid
        key = common.clarion("keys", "create", "bench", "--scope", "notify", env=self.env)
        key = key.split()[-1]
        self.pool.connect(port, [(path(rid), "l") for rid in ids], args.parallel, True)
        print(f"\n{len(ids):,} clients connected for the latency phases; results after the last")
        ctx = mp.get_context("fork")  # timestamps each event as the worker publishes it
        ready, (receiver, sender) = ctx.Event(), ctx.Pipe(duplex=False)
        values = (ctx.RawValue("q", 0), ctx.RawValue("d", 0))
        listen_args = (PUBSUB_URL, "l-", ready, *values, sender)
        listener = ctx.Process(target=pipeline_bench.listen, args=listen_args, daemon=True)
        listener.start()
        ready.wait(10)
        try:
            run = functools.partial(self.latency, port=port, key=key, ids=ids, groups=groups)
            phases = [run("warm-up (not measured)", rate=100, duration=2)]
            phases.append(
                run(f"paced at {args.rate:.0f}/s", rate=args.rate, duration=args.duration)
            )
            phases.append(run("closed loop (the maximum)", rate=0, duration=args.max_seconds))
            top = received_rate(phases[-1])
            label = f"paced at {args.max_fraction:.0%} of the maximum"
            phases.append(run(label, rate=args.max_fraction * top, duration=args.duration))
            redis.Redis.from_url(PUBSUB_URL).publish(pipeline_bench.STOP, "stop")
            published = dict(receiver.recv()) if receiver.poll(30) else {}
        finally:
            listener.kill()
        print("\n--- latency phases (POST -> the client's receive time of its notification)")
        results = [self.report(phase, published) for phase in phases]
        return results[1], results[3][0], args.max_fraction * top, top


def run(args: argparse.Namespace) -> int:
    print(f"open files: {common.raise_fd_limit():,} (the child processes inherit the limit)")
    env = common.fresh_run(DATABASE, args.log_level)
    n, b = args.connections, args.broadcast_clients
    latency_ids = [f"l-{i}" for i in range(args.latency_clients)]
    with psycopg.connect(common.pg_url(DATABASE)) as conn:  # recipients exist, with seq 0
        conn.execute(
            "INSERT INTO subscribers (id, data, seq, created_at, updated_at) SELECT id, '{}', 0,"
            " now(), now() FROM unnest(%s::text[]) id",
            [[f"s-{i}" for i in range(n)] + latency_ids],
        )
    settings = Settings()

    def path(rid: str) -> str:
        return f"/v1/me/stream?token={issue_user_token(settings, rid)}"

    phases, lines, met = set(args.phases.split(",")), ["\nsummary"], []
    with common.Processes() as procs:
        print(f"process logs: {procs.logdir}")
        pool = peers.ClientPool(args.client_procs, args.deflate)  # forked while still small
        try:
            targets = [(path(f"s-{i}"), "a" if i < b else "b") for i in range(n)]
            warm = [(path(f"w-{i}"), "warm") for i in range(args.warmup_connections)]
            rounds = synthetic_rounds([f"s-{i}" for i in range(b)], args.rounds)
            frame = encode(rounds[0][:1])[0].partition("\t")[2]  # one event, as clients get it
            print(f"frame: {len(frame)} bytes of JSON; {args.rounds} rounds x {b:,}")
            bench = Run(procs, pool, args, env, targets, warm, path)
            port, groups = None, None
            if phases & {"1", "2"}:
                bare_per, bare_rate = bench.bare(frame, args.rounds, b)
                floor_per = bench.floor() if "1" in phases else 0.0
                port, groups = bench.api()
                per, held, wall, rate = bench.clarion_fanout(port, groups, rounds)
                lines += summary_12(held, wall, per, bare_per, floor_per, rate, bare_rate, met)
            if "3" in phases:
                port, groups = (port, groups) if port else bench.api()
                found = bench.pipeline(port, groups, latency_ids, path)
                lines += summary_3(args, *found, met)
            if "4" in phases:
                lines += stream_restart.phase(bench, DATABASE, met)
        finally:
            pool.shutdown()
    print("\n".join(lines))
    return 0 if all(met) or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--connections", type=int, default=10_000, help="idle connections held (phase 1)")
    add("--broadcast-clients", type=int, default=5_000, help="clients of the fan-out phase")
    add("--rounds", type=int, default=20, help="frames per client in the fan-out phase")
    add("--window", type=int, default=4, help="rounds published ahead of the clients")
    add("--client-procs", type=int, default=4, help="client processes")
    add("--parallel", type=int, default=64, help="handshakes in flight per client process")
    add("--warmup-connections", type=int, default=100)
    add("--settle", type=float, default=2.0, help="seconds before reading RSS")
    add("--deflate", action="store_true", help="clients offer permessage-deflate")
    add("--latency-clients", type=int, default=1000, help="recipients connected (phase 3)")
    add("--rate", type=float, default=200, help="POST/s of the latency target")
    add("--duration", type=float, default=15, help="seconds per paced phase")
    add("--max-seconds", type=float, default=5, help="seconds of the closed-loop phase")
    add("--max-fraction", type=float, default=0.5, help="second paced phase: x the maximum")
    add("--post-connections", type=int, default=16, help="POST connections")
    add("--log-level", default="WARNING", help="CLARION_LOG_LEVEL")
    add("--stall", type=float, default=20, help="give up after s without frames")
    add("--strict", action="store_true", help="exit 1 when a target is not met")
    add("--phases", default="1,2,3,4", help="which phases, e.g. 1,2 (1 and 2 run together)")
    add("--storm-rate", type=float, default=200, help="phase 4: notifications/s meanwhile")
    add("--backoff-base", type=float, default=0.5, help="phase 4: client backoff base, s")
    add("--backoff-cap", type=float, default=30, help="phase 4: client backoff cap, s")
    add("--storm-timeout", type=float, default=120, help="phase 4: give up after s")
    add("--skip-floor", action="store_true", help="phase 4: no raw ASGI reference storm")
    add("--restart", choices=("handover", "cold"), default="handover",
        help="phase 4: handover = the new process gets the listening socket (socket"
        " activation) and serves before the old one gets SIGTERM; cold = stop, start")  # fmt: skip
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
