"""The chaos benchmark: faults under a sustained load, on real processes it owns.

    python -m bench.chaos [--quick] [--rate 200] [--only worker-kills,redis-restart,...]

It starts its OWN PostgreSQL cluster, Redis (``appendonly yes``) and SMTP sink
(bench/chaos_services.py), so it may restart them, plus ``clarion api``, two ``clarion
worker`` processes and ``clarion beat``, all with default settings.
A load generator sends ``--rate`` notifications a second (in-app + email, five recipients a
request) for the whole run, and the faults come one at a time:

- ``worker-kills``: SIGKILL of one worker's process group, ten times, a replacement
  started at once each time;
- ``redis-restart``: Redis shut down and started again on its append-only file;
- ``postgres-restart``: ``pg_ctl restart -m fast``;
- ``smtp-down``: the SMTP server gone for two minutes (20 s with ``--quick``);
- ``api-kill``: SIGKILL of the API process, a new one started at once.

Per fault: notifications accepted (202) while it ran, how many of those were stored,
emailed and emailed more than once, and the seconds from the fault's end until everything
accepted before the end was stored and emailed. The table is printed at the end
(docs/benchmarks/chaos.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from bench import _common as common
from bench.chaos_services import Services

RECIPIENTS_PER_POST = 5
POOL = 1000
SECRET = common.SECRET


# --- the load ----------------------------------------------------------------------------------


@dataclass
class Load:
    base: str
    key: str
    rate: float  # notifications a second
    accepted: list[tuple[float, str]] = field(default_factory=list)  # (time, notification id)
    refused: Counter = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        posts_per_second = self.rate / RECIPIENTS_PER_POST
        async with httpx.AsyncClient(timeout=10) as client:
            tasks: set[asyncio.Task] = set()
            start, n = time.monotonic(), 0
            while not self.stop.is_set():
                due = start + n / posts_per_second
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                task = asyncio.create_task(self._post(client, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _post(self, client: httpx.AsyncClient, n: int) -> None:
        first = (n * RECIPIENTS_PER_POST) % POOL
        body = {
            "recipients": [f"chaos-{(first + i) % POOL}" for i in range(RECIPIENTS_PER_POST)],
            "category": "chaos",
            "title": f"chaos {n}",
            "channels": ["in_app", "email"],
        }
        try:
            answer = await client.post(
                f"{self.base}/v1/notifications",
                json=body,
                headers={"Authorization": f"Bearer {self.key}"},
            )
        except httpx.HTTPError as exc:
            self.refused[type(exc).__name__] += 1
            return
        if answer.status_code != 202:
            self.refused[answer.status_code] += 1
            return
        now = time.monotonic()
        self.accepted.extend((now, item["id"]) for item in answer.json()["notifications"])


# --- measuring ---------------------------------------------------------------------------------


def done_ids(db: str, ids: list[str], received: set[str]) -> tuple[set[str], set[str]]:
    """(stored, emailed) among ``ids``: emailed means its delivery's Message-ID reached the
    SMTP sink."""
    if not ids:
        return set(), set()
    with psycopg.connect(db, connect_timeout=3) as conn:
        stored = {str(r[0]) for r in conn.execute(
            "SELECT id FROM notifications WHERE id = ANY(%s::uuid[])", (ids,))}  # fmt: skip
        refs = conn.execute(
            "SELECT notification_id, provider_ref FROM deliveries"
            " WHERE notification_id = ANY(%s::uuid[]) AND channel = 'email' AND status = 'sent'",
            (ids,),
        ).fetchall()
    return stored, {str(nid) for nid, ref in refs if ref in received}


def received(path: Path) -> Counter:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def wait_drained(db: str, load: Load, smtp_log: Path, until: float, limit: float) -> float | None:
    """Seconds from ``until`` (monotonic) until every notification accepted before it is
    stored and emailed; None if that took longer than ``limit``."""
    ids = [nid for t, nid in list(load.accepted) if t <= until]
    while True:
        try:
            stored, emailed = done_ids(db, ids, set(received(smtp_log)))
            if len(stored) == len(ids) and len(emailed) == len(ids):
                return time.monotonic() - until
        except psycopg.OperationalError:
            pass
        if time.monotonic() - until > limit:
            return None
        time.sleep(1)


# --- the run -------------------------------------------------------------------------------


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.services = Services()
        self.procs = common.Processes()
        self.workers: list[subprocess.Popen] = []
        self.api_port = common.free_port()
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def env(self) -> dict[str, str]:
        s = self.services
        return {
            **os.environ,
            "PYTHONPATH": str(common.ROOT),
            "CLARION_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{s.pg_port}/chaos",
            "CLARION_BROKER_URL": f"redis://127.0.0.1:{s.redis_port}/0",
            "CLARION_REDIS_URL": f"redis://127.0.0.1:{s.redis_port}/1",
            "CLARION_SECRET_KEY": SECRET,
            "CLARION_LOG_LEVEL": "WARNING",
            "CLARION_SMTP_HOST": "127.0.0.1",
            "CLARION_SMTP_PORT": str(s.smtp_port),
            "CLARION_SMTP_FROM": "chaos@clarion.test",
            **common.NO_LIMITS,
        }

    @property
    def db(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.services.pg_port}/chaos"

    def start_worker(self, n: int) -> subprocess.Popen:
        argv = [str(common.BIN / "clarion"), "worker", "--concurrency", "2"]
        return self.procs.start(f"worker-{n}", argv, self.env())

    def start_api(self) -> subprocess.Popen:
        argv = [str(common.BIN / "clarion"), "api", "--port", str(self.api_port)]
        self.api = self.procs.start(f"api-{time.monotonic():.0f}", argv, self.env())
        # Not self.procs: a worker that exited by itself is revived and reported, not fatal.
        common.wait_http(f"http://127.0.0.1:{self.api_port}/readyz", common.Processes(), 60)
        return self.api

    def revive(self, during: str) -> None:
        """What a supervisor does: a worker that exited by itself is started again (and
        reported: a fault that makes a worker exit is a finding)."""
        for i, worker in enumerate(self.workers):
            if worker.poll() is not None:
                self.notes.append(
                    f"a worker exited by itself ({worker.returncode}) during {during}"
                )
                self.procs.stop(worker)
                self.workers[i] = self.start_worker(100 + len(self.notes))

    def setup(self) -> Load:
        self.services.start()
        env = self.env()
        common.clarion("migrate", env=env)
        key = common.clarion("keys", "create", "chaos", "--scope", "notify", env=env)
        with psycopg.connect(self.db) as conn:
            conn.execute(
                "INSERT INTO subscribers (id, email, data, seq, created_at, updated_at)"
                " SELECT 'chaos-' || i, 'chaos-' || i || '@example.com', '{}', 0, now(), now()"
                " FROM generate_series(0, %s) AS i",
                (POOL - 1,),
            )
        self.workers = [self.start_worker(0), self.start_worker(1)]
        schedule = str(self.services.dir / "beat-schedule")
        self.procs.start("beat", [str(common.BIN / "clarion"), "beat", "--schedule", schedule], env)
        self.start_api()
        base = f"http://127.0.0.1:{self.api_port}"
        return Load(base, key.strip().splitlines()[-1], self.args.rate)

    # Each fault returns when it has ended.
    def worker_kills(self) -> None:
        spacing = 3.0 if self.args.quick else 6.0
        for i in range(10):
            time.sleep(spacing)
            victim = self.workers.pop(0)
            os.killpg(victim.pid, signal.SIGKILL)
            self.procs.stop(victim)  # reaped and forgotten
            self.workers.append(self.start_worker(i + 2))

    def redis_restart(self) -> None:
        self.services.stop_redis()
        time.sleep(2)
        self.services.start_redis()

    def postgres_restart(self) -> None:
        self.services.pg("restart", "-m", "fast")

    def smtp_down(self) -> None:
        self.services.stop_smtp()
        time.sleep(20 if self.args.quick else 120)
        self.services.start_smtp()

    def api_kill(self) -> None:
        os.killpg(self.api.pid, signal.SIGKILL)
        self.procs.stop(self.api)
        self.start_api()

    def run(self) -> None:
        faults = {
            "worker-kills": self.worker_kills,
            "redis-restart": self.redis_restart,
            "postgres-restart": self.postgres_restart,
            "smtp-down": self.smtp_down,
            "api-kill": self.api_kill,
        }
        chosen = self.args.only.split(",") if self.args.only else list(faults)
        load = self.setup()
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        try:
            time.sleep(self.args.warmup)
            for name in chosen:
                began = time.monotonic()
                faults[name]()
                ended = time.monotonic()
                self.revive(name)
                took = wait_drained(self.db, load, self.services.smtp_log, ended, self.args.limit)
                self.rows.append({"fault": name, "began": began, "ended": ended, "drained": took})
                print(f"{name}: drained {took if took is None else round(took, 1)} s", flush=True)
                time.sleep(self.args.settle)
        finally:
            load.stop.set()
            thread.join(30)
        # Everything accepted: wait for the tail, then count per fault window.
        wait_drained(self.db, load, self.services.smtp_log, time.monotonic(), self.args.limit)
        self.report(load)

    def report(self, load: Load) -> None:
        got = received(self.services.smtp_log)
        with psycopg.connect(self.db) as conn:
            ref_of = dict(conn.execute(
                "SELECT notification_id::text, provider_ref FROM deliveries"
                " WHERE channel = 'email' AND status = 'sent'").fetchall())  # fmt: skip
        ids = [nid for _, nid in load.accepted]
        stored, _ = done_ids(self.db, ids, set())
        lines = [
            "| fault | accepted (202) | stored | emailed | emailed twice+ | drained after (s) |",
            "|---|---|---|---|---|---|",
        ]
        for i, row in enumerate(self.rows):
            # Each fault's window: from its start (the first: from the run's) to the next's.
            begin = row["began"] if i else float("-inf")
            end = self.rows[i + 1]["began"] if i + 1 < len(self.rows) else float("inf")
            window = [nid for t, nid in load.accepted if begin <= t < end]
            emailed = [nid for nid in window if got.get(ref_of.get(nid, ""), 0) >= 1]
            twice = [nid for nid in window if got.get(ref_of.get(nid, ""), 0) >= 2]
            drained = "not within limit" if row["drained"] is None else f"{row['drained']:.1f}"
            lines.append(
                f"| {row['fault']} | {len(window)} | {len(set(window) & stored)} "
                f"| {len(emailed)} | {len(twice)} | {drained} |"
            )
        dup_total = sum(1 for c in got.values() if c > 1)
        lines.append("")
        lines.append(
            f"Whole run: {len(ids)} accepted, {len(set(ids) & stored)} stored, "
            f"{sum(1 for n in ids if got.get(ref_of.get(n, ''), 0))} emailed, {dup_total} "
            f"Message-IDs received more than once; refused/failed POSTs: {dict(load.refused)}"
        )
        lines += [f"Note: {n}" for n in self.notes]
        print("\n".join(lines), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter fault durations")
    p.add_argument("--rate", type=float, default=200.0, help="notifications a second")
    p.add_argument("--only", help="comma-separated faults, in order")
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=10.0, help="seconds between faults")
    p.add_argument("--limit", type=float, default=300.0, help="give up draining after")
    args = p.parse_args()
    common.raise_fd_limit()
    chaos = Chaos(args)
    try:
        chaos.run()
    finally:
        chaos.procs.__exit__()
        chaos.services.close()


if __name__ == "__main__":
    main()
