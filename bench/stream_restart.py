"""bench.stream's phase 4: a reconnect storm after a 1012 restart, resumed with cursors.

``--connections`` (10,000) clients, each its own recipient ``r-*`` (seq 0), connect to
``clarion api`` and go live (their ``unread_count`` arrived). Then the API is restarted
under them, the harness acting as the service manager (:class:`Manager`): with
``--restart handover`` (the default) it holds the listening socket and passes it to each
process (``LISTEN_FDS``), starts the new process, waits for its ``READY=1``
(``NOTIFY_SOCKET``) and only then sends SIGTERM to the old one, which closes every
socket with 1012 and exits; with ``--restart cold`` it stops the old one first and starts
the new one on the port. Each client (:mod:`bench.stream_storm`) reconnects the way
``clarion/web/live.js`` does: at once after a 1012, then with full-jitter backoff (a
uniform delay in [0, min(cap, base x 2^attempt)]) while connects fail, with ``since`` =
the cursor of the last event it saw.
Meanwhile a notifier thread stores notifications for random recipients through
``create_notifications`` (the worker's create step, publishing to Redis after commit) from
just before the SIGTERM until every client is live again, so each resume has events to
replay and live events race the replay. Reported: close -> the new API serving, close ->
all live (each client's ``unread_count`` after its replay), connections/s, the API's CPU
per connect (and its event loop thread's share), p50/p99 of each client's gap (close ->
first frame after reconnecting); and the check: each client received every stored
notification of its recipient exactly once (``seq`` 1..head).

The same storm against the raw ASGI app on uvicorn (``asgi_floor``, served the same way,
which uvicorn closes with 1012 on SIGTERM too; no resume, no notifications) is the
reference for the rate.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg

from bench import _common as common
from bench.stream_peers import ClientPool
from bench.stream_report import verdict
from bench.stream_storm import storm_main


class Notifier(threading.Thread):
    """Stores notifications for random recipients at ``rate``/s (``batch`` per create), as
    the worker's create step does, publishing each batch to Redis after its commit."""

    def __init__(self, recipients: list[str], rate: float, batch: int = 10) -> None:
        super().__init__(daemon=True)
        self.recipients, self.rate, self.batch = recipients, rate, batch
        self.done, self.created, self.errors = threading.Event(), 0, 0

    def run(self) -> None:
        from clarion.core import enqueue
        from clarion.core.create import create_notifications
        from clarion.core.schemas import NotificationCreate
        from clarion.runtime import Runtime
        from clarion.settings import Settings

        runtime = Runtime(Settings())
        pipeline = {**runtime.pipeline.kwargs(), "dispatcher": _NoDispatch()}
        start, k = time.monotonic(), 0
        while not self.done.is_set():
            due = start + k * self.batch / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            who = random.sample(self.recipients, self.batch)
            request = NotificationCreate(recipients=who, category="bench", title=f"storm {k}")
            try:
                create_notifications([enqueue.prepare(request)], **pipeline)
                self.created += self.batch
            except Exception:  # noqa: BLE001 - counted; the check shows what it cost
                self.errors += 1
            k += 1
        runtime.close()


class _NoDispatch:
    def deliver(self, channel, delivery_ids, *, lane) -> None:
        pass


# Run by each server process before the server itself: the harness's listening socket
# becomes fd 3, as a service manager passes it (sd_listen_fds(3)).
AS_FD_3 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execv(sys.argv[2], sys.argv[2:])"


class Manager:
    """The harness as a service manager for one server's restarts: it starts each process
    with NOTIFY_SOCKET and waits for its READY=1; with ``handover`` it also holds the
    listening socket and passes it to every process (LISTEN_FDS), so the socket is never
    closed, and starts the new process before it stops the old one."""

    def __init__(self, procs, env: dict, handover: bool) -> None:
        self.procs, self.handover = procs, handover
        self.listener = socket.create_server(("127.0.0.1", 0)) if handover else None
        self.port = self.listener.getsockname()[1] if self.listener else common.free_port()
        self.path = str(procs.logdir / f"notify-{self.port}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.path)
        self.env = {**env, "NOTIFY_SOCKET": self.path}
        self.started = 0

    def start(self, label: str, argv: list[str]):
        """Start ``argv`` and wait until it says READY=1."""
        self.started += 1
        name, popen, env = f"{label}-{self.started}", {}, self.env
        if self.listener is not None:
            fd = self.listener.fileno()
            argv = [sys.executable, "-c", AS_FD_3, str(fd), *argv]
            env, popen = {**env, "LISTEN_FDS": "1"}, {"pass_fds": (fd,)}
        proc = self.procs.start(name, argv, env, **popen)
        self.notify.settimeout(0.2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.procs.check_alive()
            with contextlib.suppress(TimeoutError):
                if self.notify.recv(64) == b"READY=1":
                    return proc
        raise TimeoutError(f"{name} not ready after 60 s")

    def close(self) -> None:
        self.notify.close()
        os.unlink(self.path)
        if self.listener is not None:
            self.listener.close()


def listen_overflows() -> int:
    """The kernel's count of connections dropped on a full accept queue (``nstat``'s
    TcpExtListenOverflows): each drop costs its client a SYN retransmit (1 s, then 3 s)."""
    names, values = [
        line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
        if line.startswith("TcpExt:")
    ]  # fmt: skip
    return int(values[names.index("ListenOverflows")])


def raise_somaxconn(n: int) -> str:
    """The kernel caps every listen backlog at ``net.core.somaxconn``; the deploy docs say
    to raise it to at least the clients one API process holds. Done here when allowed."""
    path = Path("/proc/sys/net/core/somaxconn")
    now = int(path.read_text())
    if now >= n:
        return f"net.core.somaxconn {now}"
    try:
        path.write_text(str(n))
    except OSError:
        return f"net.core.somaxconn {now}, below {n:,} clients (not allowed to raise it)"
    return f"net.core.somaxconn raised {now} -> {n} for this run, as the deploy docs say"


def loop_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (uvicorn's event loop); the rest of the
    process's CPU is its other threads' (the batches' reads, the pub/sub reader)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def storm(run, label: str, argv: list[str], recipients: list[str] | None) -> dict:
    """Connect every client, restart the server (argv + port) under them, wait for all to
    be live again. ``recipients``: notify them during the restart and check the resumes."""
    args, procs = run.args, run.procs
    manager = Manager(procs, run.env, args.restart == "handover")
    port, n = manager.port, args.connections
    argv = [*argv, "--port", str(port)]  # a passed socket wins over the port
    server = manager.start(label, argv)
    pool = ClientPool(args.client_procs, False, storm_main)
    try:
        paths = [(f"r-{i}", run.path(f"r-{i}")) for i in range(n)]
        backoff = [args.backoff_base, args.backoff_cap]
        kw = {"port": port, "parallel": args.parallel, "backoff": backoff}
        t = time.time()
        k = len(pool.pipes)
        pool.ask("connect", [{**kw, "paths": paths[i::k]} for i in range(k)])
        print(f"\n{label}: {n:,} clients live in {time.time() - t:.1f} s; restarting the server")
        pool.each("reset")
        notifier = Notifier(recipients, args.storm_rate) if recipients else None
        if notifier:
            notifier.start()
            time.sleep(0.5)
        fresh = manager.start(label, argv) if manager.handover else None
        accepting = closed = time.time()
        procs.stop(server)  # SIGTERM, then wait for it to exit
        exited = time.time()
        if fresh is None:
            fresh = manager.start(label, argv)
            accepting = time.time()
        groups = {"server": fresh.pid, "clients": pool.pgid}
        before, loop_before = common.cpu_snapshot(groups), loop_cpu(fresh.pid)
        overflows = listen_overflows()
        while pool.frames() < n and time.time() - closed < args.storm_timeout:
            procs.check_alive()
            time.sleep(0.005)
        all_live = time.time()
        after, loop_after = common.cpu_snapshot(groups), loop_cpu(fresh.pid)
        overflows = listen_overflows() - overflows
        if notifier:
            time.sleep(0.5)  # live events after the last client went live
            notifier.done.set()
            notifier.join()
            time.sleep(args.settle)  # the last batch's events reach their clients
        answers = pool.each("stats")
        pool.each("stop")
        procs.stop(fresh)
    finally:
        pool.shutdown()
        manager.close()
    clients = [c for a in answers for c in a["clients"]]
    closes = sum((Counter(a["closes"]) for a in answers), Counter())
    cpu_api = after["server"] - before["server"]
    cpu = common.cpu_report(before, after, all_live - accepting)
    return {
        "label": label, "closed": closed, "exited": exited, "accepting": accepting,
        "all_live": all_live, "live": pool_live(clients), "clients": clients, "closes": closes,
        "cpu_per_connect": cpu_api / n, "cpu": cpu, "notifier": notifier,
        "loop_per_connect": (loop_after - loop_before) / n, "overflows": overflows,
    }  # fmt: skip


def pool_live(clients: list) -> int:
    return sum(1 for c in clients if c[3] is not None)


def head_seqs(database: str) -> dict[str, int]:
    with psycopg.connect(common.pg_url(database)) as conn:
        rows = conn.execute("SELECT id, seq FROM subscribers WHERE id LIKE 'r-%%'").fetchall()
    return dict(rows)


def check(result: dict, heads: dict[str, int]) -> tuple[int, int, int]:
    """(clients missing something, clients with a duplicate, notifications expected), of
    the clients live again (one still reconnecting at the timeout is not counted)."""
    missing = twice = expected = 0
    for rid, seqs, _, live_after, *_ in result["clients"]:
        if live_after is None:
            continue
        head = heads.get(rid, 0)
        expected += head
        if any(seqs.get(s, 0) == 0 for s in range(1, head + 1)):
            missing += 1
        if any(count > 1 for count in seqs.values()):
            twice += 1
    return missing, twice, expected


def report(result: dict, n: int) -> list[str]:
    gaps = [c[2] for c in result["clients"] if c[2] is not None]
    lives = [c[3] for c in result["clients"] if c[3] is not None]
    span = result["all_live"] - result["closed"]
    storm_span = result["all_live"] - result["accepting"]
    connects = sum(c[4] for c in result["clients"]) - n
    pct, ms = common.percentile, common.ms
    lines = [
        f"\n{result['label']}: {len(lives):,} of {n:,} clients live again"
        f" {span:.2f} s after the close (server exited after "
        f"{result['exited'] - result['closed']:.2f} s, "
        + (
            f"accepting again after {result['accepting'] - result['closed']:.2f} s"
            if result["accepting"] > result["closed"]
            else "the new one served before it"
        )
        + f"); closes: {dict(result['closes'])}",
        f"  accepting -> all live {storm_span:.2f} s = {n / storm_span:,.0f} connections/s;"
        f" {connects:,} connection attempts after the close; {result['overflows']:,} SYNs"
        " dropped on a full accept queue (this host's, for any listener)",
        f"  server CPU per connect {result['cpu_per_connect'] * 1000:.2f} ms"
        f" (while the clients reconnected), of which its event loop's thread"
        f" {result['loop_per_connect'] * 1000:.2f} ms",
    ]
    if gaps:
        lines.append(
            f"  gap (close -> first frame after reconnecting): p50 {ms(pct(gaps, 50))},"
            f" p99 {ms(pct(gaps, 99))}, max {ms(max(gaps))}; close -> live again (after the"
            f" replay): p50 {ms(pct(lives, 50))}, p99 {ms(pct(lives, 99))}"
        )
    lines.append(f"  CPU, % of one core, accepting -> all live: {result['cpu']}")
    return lines


def phase(run, database: str, met: list) -> list[str]:
    """Phase 4: the storm against the raw ASGI app, then against Clarion; summary lines."""
    args, n = run.args, run.args.connections
    with psycopg.connect(common.pg_url(database)) as conn:
        conn.execute(
            "INSERT INTO subscribers (id, data, seq, created_at, updated_at) SELECT id, '{}', 0,"
            " now(), now() FROM unnest(%s::text[]) id ON CONFLICT DO NOTHING",
            [[f"r-{i}" for i in range(n)]],
        )
    print(raise_somaxconn(n + 1024))
    floor = None
    if not args.skip_floor:
        argv = [sys.executable, "-m", "bench.stream_peers", "floor"]
        floor = storm(run, "reference: raw ASGI app on uvicorn", argv, None)
        for line in report(floor, n):
            print(line)
    argv = [run.clarion, "api", "--host", "127.0.0.1"]
    result = storm(run, "clarion api", argv, [f"r-{i}" for i in range(n)])
    for line in report(result, n):
        print(line)
    missing, twice, expected = check(result, head_seqs(database))
    notifier = result["notifier"]
    resyncs = sum(c[5] for c in result["clients"])
    print(
        f"  notifications stored during the restart: {notifier.created:,}"
        f" ({notifier.errors} failed creates); owed to the clients {expected:,}:"
        f" {missing:,} clients missed some, {twice:,} got one twice, {resyncs} resyncs"
    )
    span = result["all_live"] - result["closed"]
    storm_span = result["all_live"] - result["accepting"]
    rate = n / storm_span
    ok = result["live"] == n and span <= 5 and rate >= 2000 and not missing and not twice
    met.append(ok)
    lines = [
        f"  4. reconnect storm: all {result['live']:,} of {n:,} live {span:.2f} s after the 1012"
        f" (target <= 5 s), {rate:,.0f} connections/s (target >= 2,000),"
        f" {result['cpu_per_connect'] * 1000:.2f} ms API CPU per connect;"
        f" missed {missing}, twice {twice}: {verdict(ok)}"
    ]
    if floor:
        floor_rate = n / (floor["all_live"] - floor["accepting"])
        met.append(rate >= 0.65 * floor_rate)
        lines.append(
            f"     raw ASGI: {floor_rate:,.0f} connections/s: {rate / floor_rate:.2f} x"
            f" (target >= 0.65 x): {verdict(met[-1])};"
            f" {floor['cpu_per_connect'] * 1000:.2f} ms CPU per connect"
        )
    return lines
