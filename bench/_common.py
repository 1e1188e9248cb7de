"""Shared plumbing for the benchmarks: environment, fresh database, processes, statistics.

Every process a benchmark starts goes through :class:`Processes`, which puts each one in its
own process group and kills the groups on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = os.environ.get("CLARION_BENCH_REDIS", "redis://127.0.0.1:6379")
BROKER_DB, PUBSUB_DB = 12, 13  # the only Redis databases benchmarks may touch
SECRET = "bench-secret-key-not-for-production-0123456789abcdef"


# One key and a few users drive each benchmark far past the production rate limits;
# docs/benchmarks/rate-limits.md measures what the checks cost.
NO_LIMITS = {
    "CLARION_API_KEY_RATE_LIMIT": "100000000/minute",
    "CLARION_API_KEY_DAILY_QUOTA": "0",
    "CLARION_USER_RATE_LIMIT": "100000000/minute",
    "CLARION_STREAM_CONNECT_RATE_LIMIT": "100000000/minute",
}


def clarion_env(database: str, log_level: str = "WARNING") -> dict[str, str]:
    """The environment every Clarion process of a benchmark run gets (and this one too)."""
    env = {
        "CLARION_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
        "CLARION_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "CLARION_REDIS_URL": f"{REDIS}/{PUBSUB_DB}",
        "CLARION_SECRET_KEY": SECRET,
        "CLARION_LOG_LEVEL": log_level,
        # The benchmarks' push services and receivers listen on loopback.
        "CLARION_OUTBOUND_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        **NO_LIMITS,
    }
    os.environ.update(env)  # so Settings() in this process agrees with the children
    return {**os.environ, "PYTHONPATH": str(ROOT), **env}


def pg_url(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def reset_database(database: str) -> None:
    """Drop and recreate the benchmark's own database (never any other)."""
    assert database.startswith("clarion_bench"), database
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def flush_redis() -> None:
    for db in (BROKER_DB, PUBSUB_DB):
        client = redis.Redis.from_url(f"{REDIS}/{db}")
        client.flushdb()
        client.close()


def clarion(*args: str, env: dict[str, str]) -> str:
    """Run a ``clarion`` CLI command to completion and return its stdout."""
    done = subprocess.run(
        [str(BIN / "clarion"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"clarion {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def fresh_run(database: str, log_level: str) -> dict[str, str]:
    """Start a run clean: warn if the machine is busy, a new database migrated, Redis
    databases flushed. Returns the environment for Clarion processes."""
    warn_if_busy()
    env = clarion_env(database, log_level)
    reset_database(database)
    flush_redis()
    clarion("migrate", env=env)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Start long-running processes in their own groups; kill every group on exit."""

    def __init__(self) -> None:
        self.logdir = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            **popen,
        )  # fmt: skip
        log.close()
        self._procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # the group: prefork children too
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, proc in reversed(self._procs):
            self.stop(proc)


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (inherited by its children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident memory of one process (VmRSS from /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_port(port: int, procs: Processes, timeout: float = 30.0) -> None:
    """Until something listens on 127.0.0.1:``port`` (a peer the benchmark started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_http(url: str, procs: Processes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s")


# --- CPU accounting from /proc: who used the two cores during a phase -------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> list[tuple[int, str, int, float]]:
    """(pid, comm, process group, CPU seconds incl. reaped children) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        ticks = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
        out.append((int(entry), comm, int(rest[2]), ticks / _TICK))
    return out


def own_cpu(pid: int) -> float:
    """CPU seconds of one process alone (its threads, not its children): a prefork
    worker's parent, whose share is Celery's consumer (broker reads, acks, the pipes)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    rest = raw[raw.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _TICK


def cpu_snapshot(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far per named process group, plus PostgreSQL, Redis and this harness."""
    totals = dict.fromkeys([*groups, "postgres", "redis", "harness"], 0.0)
    # Machine-wide, from /proc/stat: softirq (loopback networking) is charged to no process.
    fields = [int(x) / _TICK for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = fields
    totals.update(
        {
            "(all user+sys)": user + nice + system,
            "(irq+softirq)": irq + softirq,
            "(idle)": idle + iowait,
        }
    )
    by_pgid = {pgid: name for name, pgid in groups.items()}
    me = os.getpgrp()
    for _pid, comm, pgrp, secs in _proc_stats():
        if pgrp in by_pgid:
            totals[by_pgid[pgrp]] += secs
        elif comm == "postgres" or comm.startswith("postgres:"):
            totals["postgres"] += secs
        elif comm.startswith("redis-server"):
            totals["redis"] += secs
        elif pgrp == me:
            totals["harness"] += secs
    return totals


def background_load(seconds: float = 2.0) -> float:
    """Percent of one core the machine is busy with before the benchmark starts anything."""

    def busy_idle() -> tuple[float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
        return sum(fields) - fields[3] - fields[4], fields[3] + fields[4]

    b0, i0 = busy_idle()
    time.sleep(seconds)
    b1, i1 = busy_idle()
    cores = os.cpu_count() or 1
    return 100 * cores * (b1 - b0) / max(1, (b1 - b0) + (i1 - i0))


def warn_if_busy() -> None:
    load = background_load()
    print(f"machine before the run: {load:.0f}% of one core busy ({os.cpu_count()} cores)")
    if load > 15:
        print("  !! something else is using the CPU: figures below are not representative")


def cpu_report(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    """'api 62%  worker 95% ... | machine 190% (other 3%), irq 5%, idle 5%' over the wall time."""
    used = {k: 100 * (after[k] - before[k]) / wall for k in after}
    machine, irq, idle = used.pop("(all user+sys)"), used.pop("(irq+softirq)"), used.pop("(idle)")
    other = max(0.0, machine - sum(used.values()))  # counters disagree by a few %
    parts = "  ".join(f"{k} {v:.0f}%" for k, v in used.items())
    return (
        f"{parts} | machine {machine:.0f}% (other {other:.0f}%), irq {irq:.0f}%, idle {idle:.0f}%"
    )


def cpu_per(before: dict[str, float], after: dict[str, float], count: int, unit: str) -> str:
    """'api 20.1  clients 9.8 ... µs per <unit>': CPU per operation of each process group,
    steadier than the wall-clock rate on a loaded machine (PostgreSQL and Redis are every
    such process on the machine, so another user's load lands in them)."""
    skip = ("(all user+sys)", "(irq+softirq)", "(idle)")
    parts = "  ".join(
        f"{k} {1e6 * (after[k] - before[k]) / count:.1f}" for k in after if k not in skip
    )
    return f"{parts} µs per {unit}"


# --- statistics -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
