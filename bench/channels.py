"""Channel throughput benchmark: email over SMTP and web push, each next to the raw
library as its baseline, and the cost of a retry cycle.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.channels                  # ~1.5 minutes
    .venv/bin/python -m bench.channels --emails 1000 --pushes 1000    # ~50 s

What it does, in one run on one machine (the peer servers run in their own processes,
``bench/channels_peers.py``, so they do not share this process's GIL):

1. **Email**, against a local aiosmtpd sink:
   (a) baseline: raw aiosmtplib on one SMTP session, one message at a time, the bytes of a
   message Clarion rendered (same size);
   (b) the deliver step in this process: ``clarion.core.deliver.deliver`` on N pending
   deliveries, 100 ids per call as the tasks get them (claim, render, send, record);
   (c) the real path: ``clarion worker --queues deliver.email --concurrency 2``; N
   deliveries dispatched by ``Runtime.deliver`` (tasks of 100); the time runs from the
   first task enqueued to the last row ``sent`` (its ``updated_at``).
   Targets: >= 0.6 x the baseline and >= 200 emails/s.
2. **Web push**, against a minimal local push service that answers 201:
   baselines: raw pywebpush encryption + VAPID signature per message (no POST), and raw
   ``pywebpush.webpush`` (encrypt + sign + POST on one keep-alive session); then the deliver
   step in this process and a real worker, as for email. Target: >= 0.7 x the encrypt+sign
   baseline.
3. **Retry cycle**: N email deliveries whose first attempt gets ``451`` (the SMTP peer
   answers 451 to the first DATA of each Message-ID, 250 to the next), with
   ``CLARION_RETRY_BACKOFF_SECONDS`` tiny, through the same worker setup as 1(c), whose
   first-time success is the comparison: extra worker CPU per retry, extra wall time, and
   the database work (attempt rows, row updates, transactions, WAL) per delivery.

Setup is not measured: subscribers are inserted with SQL, and the deliveries come from
Clarion's own ``create`` step (``enqueue.prepare`` + ``create.persist``, 1,000 recipients per
request) run in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/channels.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench import _common as common
from bench import channels_profile
from bench.channels_kit import (
    DATABASE,
    EMAIL_RATE,
    EMAIL_RATIO,
    PUSH_RATIO,
    SENDER,
    Db,
    Figure,
    Recorder,
    TimedChannels,
)
from bench.channels_peers import FAIL_FIRST, Counters
from bench.channels_phases import Phases
from bench.channels_report import Report

# --- the run -------------------------------------------------------------------------------


class Bench(Phases, Report):
    def __init__(self, procs: common.Processes, env: dict, args: argparse.Namespace) -> None:
        self.procs, self.env, self.args = procs, env, args
        self.db_url = common.pg_url(DATABASE)
        self.db = Db(self.db_url)
        self.runtime = None
        self.clarion = str(common.BIN / "clarion")
        self.ok = True  # nothing lost, nothing sent twice
        self.profiles: list[Path] = []

    # -- helpers ------------------------------------------------------------------------
    def configure(self, values: dict[str, str]) -> None:
        """Settings for this process and the workers; a new Runtime that knows them."""
        from clarion.runtime import Runtime
        from clarion.settings import Settings

        os.environ.update(values)
        self.env.update(values)
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = Runtime(Settings())

    def start_peer(self, kind: str) -> tuple[int, Counters, subprocess.Popen]:
        port = common.free_port()
        counters = Counters(self.procs.logdir / f"{kind}.counters", create=True)
        argv = [sys.executable, "-m", "bench.channels_peers", kind, str(port), str(counters.path)]
        peer = self.procs.start(f"{kind}-peer", argv, self.env)
        common.wait_port(port, self.procs)
        return port, counters, peer

    def vacuum(self) -> None:
        """What autovacuum would do after the bulk setup, done now rather than mid-phase."""
        self.runtime.engine.dispose()
        for table in ("subscribers", "push_subscriptions", "notifications", "deliveries"):
            self.db.query(f"VACUUM ANALYZE {table}")

    def profile_start(self, name: str, pid: int) -> subprocess.Popen | None:
        """py-spy on a process (and its prefork children) while a phase runs."""
        if not self.args.profile:
            return None
        out = Path(self.args.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(common.BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "200"]
        argv += ["--format", "raw", "--nonblocking", "--output", str(out)]
        if name.startswith("worker"):
            argv.append("--subprocesses")
        proc = self.procs.start(f"py-spy-{name}", argv, self.env)
        time.sleep(1.0)  # attached
        self.profiles.append(out)
        return proc

    def profile_stop(self, proc: subprocess.Popen | None) -> None:
        if proc is None:
            return
        os.killpg(proc.pid, signal.SIGINT)  # py-spy writes its output on Ctrl-C
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        self.procs.stop(proc)

    def wait_done(
        self, ids: list[uuid.UUID], counters: Counters, accepted: int, timeout: float
    ) -> float:
        """Until the peer accepted ``accepted`` in all and every row is ``sent``; returns
        the time of the last row's ``updated_at`` (when its outcome was recorded)."""
        last, changed = counters.accepted, time.monotonic()
        deadline = time.monotonic() + timeout
        while counters.accepted < accepted:
            self.procs.check_alive()
            now = time.monotonic()
            if counters.accepted != last:
                last, changed = counters.accepted, now
            elif now - changed > self.args.stall or now > deadline:
                raise TimeoutError(f"stalled: the peer accepted {last} of {accepted}")
            time.sleep(0.02)
        while True:
            sent, end = self.db.query(
                "SELECT count(*), extract(epoch FROM max(updated_at)) FROM deliveries "
                "WHERE id = ANY(%s) AND status = 'sent'",
                [ids],
            )[0]
            if sent == len(ids):
                return float(end)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sent} of {len(ids)} rows sent")
            time.sleep(0.02)

    def check(self, label: str, counters: Counters, before: int, count: int) -> None:
        got = counters.accepted - before
        if got != count:
            self.ok = False
            print(f"  !! {label}: the peer accepted {got} messages for {count} deliveries")

    def statuses(self, ids: list[uuid.UUID]) -> dict[str, int]:
        return dict(
            self.db.query(
                "SELECT status, count(*) FROM deliveries WHERE id = ANY(%s) GROUP BY 1", [ids]
            )
        )

    # -- the deliver step, in this process or in a worker ----------------------------------
    def inprocess(
        self,
        channel: str,
        warm: list,
        ids: list,
        counters: Counters,
        groups: dict,
        no_send: bool = False,
    ) -> Figure:
        """The deliver step in this process, 100 ids per call as a task gets them. With
        ``no_send``, the channel renders and sends nothing: what is left is the state
        machine and its database work. Render and send are timed in place (:class:`Timed`)."""
        from clarion.core.deliver import deliver

        recorder = Recorder()
        channels = TimedChannels(self.runtime.channels, no_send)

        def run(batch_ids: list) -> None:
            for start in range(0, len(batch_ids), 100):
                deliver(
                    batch_ids[start : start + 100],
                    channel=channel,
                    sessions=self.runtime.sessions,
                    settings=self.runtime.settings,
                    channels=channels,
                    scheduler=recorder,
                )

        run(warm)  # the SMTP session or HTTP connection, the pool, the templates
        timed = channels.get(channel)
        timed.render_s = timed.send_s = 0.0
        name = f"inprocess-{channel}" + ("-nosend" if no_send else "")
        profiler = self.profile_start(name, os.getpid())
        before, accepted = common.cpu_snapshot(groups), counters.accepted
        started, cpu = time.perf_counter(), time.process_time()
        run(ids)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = common.cpu_snapshot(groups)
        self.profile_stop(profiler)
        self.check(f"in-process {channel}", counters, accepted, 0 if no_send else len(ids))
        states = self.statuses(ids)
        if states != {"sent": len(ids)} or recorder.retries or recorder.dead:
            self.ok = False
            print(f"  !! in-process {channel}: {states}, retries {recorder.retries}")
        self.runtime.engine.dispose()  # its backends exit, so their statistics are flushed
        label = "deliver step, no render, no send" if no_send else "deliver step in-process"
        return Figure(
            f"{channel}: {label}",
            len(ids),
            seconds,
            cpu=common.cpu_report(before, after, seconds),
            cpu_ms=cpu / len(ids) * 1000,
            parts={
                "render": timed.render_s / len(ids) * 1000,
                "send": timed.send_s / len(ids) * 1000,
            },
        )

    def worker(
        self,
        channel: str,
        warm: list,
        ids: list,
        counters: Counters,
        groups: dict,
        label: str,
        fail_first: bool = False,
    ) -> Figure:
        self.runtime.engine.dispose()  # no idle connection of ours left in the counts
        # Both worker phases start right after a checkpoint, so each pays the same full-page
        # images in the WAL for the pages it touches first.
        self.db.query("CHECKPOINT")
        db0 = self.db.counters()
        argv = [self.clarion, "worker", "--queues", f"deliver.{channel}", "--concurrency"]
        argv += [str(self.args.concurrency), "--pool", self.args.pool, "--hostname", f"{label}@%h"]
        worker = self.procs.start(label, argv, self.env)
        groups = {**groups, "worker": worker.pid}
        # Warm-up: the worker starts, each child opens its session and its pool.
        accepted = counters.accepted
        self.runtime.deliver(channel, warm)
        self.wait_done(warm, counters, accepted + len(warm), timeout=90)
        if fail_first:
            counters.set_mode(FAIL_FIRST)
        profiler = self.profile_start(label, worker.pid)
        accepted, deferred = counters.accepted, counters.deferred
        before = common.cpu_snapshot(groups)
        started = time.time()
        self.runtime.deliver(channel, ids)
        end = self.wait_done(ids, counters, accepted + len(ids), timeout=300)
        after, window = common.cpu_snapshot(groups), time.time() - started
        self.profile_stop(profiler)
        counters.set_mode(0)
        self.check(label, counters, accepted, len(ids))
        self.procs.stop(worker)
        db1 = self.db.counters()
        seconds = end - started
        cpu_s = {k: after[k] - before[k] for k in after}
        figure = Figure(
            f"{channel}: clarion worker --concurrency {self.args.concurrency}"
            + ("" if self.args.pool == "prefork" else f" --pool {self.args.pool}"),
            len(ids),
            seconds,
            cpu=common.cpu_report(before, after, window),
            cpu_s=cpu_s,
            cpu_ms=cpu_s["worker"] / len(ids) * 1000,
            db={k: db1[k] - db0[k] for k in db0},
        )
        figure.deferred = counters.deferred - deferred
        return figure


def run(args: argparse.Namespace) -> int:
    os.environ.update(
        {
            "CLARION_SMTP_FROM": SENDER,
            # Retries come back at once: the retry phase measures their cost, not the wait.
            "CLARION_RETRY_BACKOFF_SECONDS": str(args.backoff),
            "CLARION_DELIVERY_SYNCHRONOUS_COMMIT": args.synchronous_commit,
        }
    )
    print(f"deliver step: synchronous_commit {args.synchronous_commit}")
    env = common.fresh_run(DATABASE, args.log_level)
    with common.Processes() as procs:
        print(f"process logs: {procs.logdir}")
        bench = Bench(procs, env, args)
        email: dict[str, Figure] = {}
        push: dict[str, Figure] = {}
        try:
            if "email" in args.channels:
                email = bench.email()
            if "push" in args.channels:
                push = bench.push()
        finally:
            if bench.runtime is not None:
                bench.runtime.close()
            bench.db.close()
        bench.table(email, push)
    for path in bench.profiles:
        print(f"\nprofile {path} (py-spy, collapsed stacks):")
        for share, name in channels_profile.summary(path):
            print(f"  {share:5.1f}%  {name}")
    if not bench.ok:
        print("\n!! messages lost or sent twice: see above")
        return 1
    targets = [
        Bench.met(figures[k], figures["baseline"], ratio, rate)
        for figures, ratio, rate in ((email, EMAIL_RATIO, EMAIL_RATE), (push, PUSH_RATIO, None))
        for k in ("in", "worker")
        if figures
    ]
    return 0 if all(targets) or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--channels", type=lambda v: v.split(","), default=["email", "push"],
        help="comma-separated: email,push (default both)")  # fmt: skip
    add("--emails", type=int, default=3000, help="deliveries per email phase (N)")
    add("--pushes", type=int, default=3000, help="deliveries per web push phase")
    add("--baseline-sends", type=int, default=3000, help="raw aiosmtplib sends")
    add("--baseline-pushes", type=int, default=2000, help="raw pywebpush messages, each way")
    add("--warmup", type=int, default=400, help="unmeasured deliveries before each phase")
    add("--concurrency", type=int, default=2, help="the worker's processes (or threads)")
    add("--pool", choices=["prefork", "threads"], default="prefork", help="the worker's pool")
    add("--backoff", type=float, default=0.001, help="CLARION_RETRY_BACKOFF_SECONDS")
    add("--synchronous-commit", choices=["on", "off"], default="on",
        help="CLARION_DELIVERY_SYNCHRONOUS_COMMIT (in-process and worker)")  # fmt: skip
    add("--log-level", default="WARNING", help="CLARION_LOG_LEVEL of the workers")
    add("--stall", type=float, default=20, help="give up after s without progress")
    add("--profile", metavar="DIR", help="py-spy each measured phase into DIR (slower)")
    add("--strict", action="store_true", help="exit 1 when a target is not met")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
