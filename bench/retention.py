"""Retention benchmark: the beat task's batched deletes on a large ``notifications`` table,
with the create path sending at the same time.

Run from the repository root (PostgreSQL on 127.0.0.1; Redis for the create path's
live events, ``CLARION_BENCH_REDIS``)::

    .venv/bin/python -m bench.retention --rows 1000000
    .venv/bin/python -m bench.retention --rows 10000000 --send-seconds 30

What it does, in its own database ``clarion_bench_retention``:

1. Generates ``--rows`` notifications with INSERT … SELECT generate_series (no API): 10,000
   recipients, created evenly over the last 360 days (UUIDv7 ids of their time), 10% in
   category ``security`` (kept 730 days), the rest ``news`` (kept 180 days); a fifth have
   an email delivery (sent, one attempt), one in a thousand of those still pending.
2. Send baseline: a thread runs the worker's create path (``batches.create_requests``, 10
   recipients a request) for ``--send-seconds``; notifications/s and per-request latency.
3. Retention: one run with no time budget (``retention.run``) while the same send thread
   runs. Figures: rows deleted per second (notifications; their deliveries and attempts
   go with them), the longest batch (a transaction: the longest any row lock is held),
   the longest lock wait any session had (pg_stat_activity sampled every 20 ms), and the
   send figures beside the baseline.
4. A second run (nothing left to delete): what a steady-state run costs, since it walks
   the rows kept in the window (``security`` between 180 and 360 days, pending ones).
0. ``--partitions`` (first): the same rows in a copy partitioned by month on ``created_at``; the
   time to drop the partitions older than 180 days, for comparison (docs/operations/
   retention.md says why the table is not partitioned).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/retention.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import _common as common

DATABASE = "clarion_bench_retention"
SUBSCRIBERS = 10_000
CHUNK = 1_000_000

# A UUIDv7 of the row's time: 48 bits of milliseconds, version 7, the rest from md5(i).
UUID7 = (
    "(lpad(to_hex((extract(epoch from {ts}) * 1000)::bigint), 12, '0') || '7'"
    " || substr(md5({i}::text), 1, 3) || '8' || substr(md5({i}::text), 4, 15))::uuid"
)


def generate(conn: psycopg.Connection, rows: int) -> float:
    started = time.monotonic()
    conn.execute(
        "INSERT INTO subscribers (id, data, seq, created_at, updated_at)"
        " SELECT 'u' || g, '{}', 0, now(), now() FROM generate_series(1, %s) g",
        (SUBSCRIBERS,),
    )
    ts = f"(now() - interval '360 days' * (1 - i::float8 / {rows}))"
    for lo in range(1, rows + 1, CHUNK):
        hi = min(rows, lo + CHUNK - 1)
        conn.execute(
            "INSERT INTO notifications (id, request_id, recipient_id, seq, category,"
            " severity, title, body, metadata, created_at)"
            f" SELECT {UUID7.format(ts=ts, i='i')}, {UUID7.format(ts=ts, i='i')},"
            f" 'u' || (i % {SUBSCRIBERS} + 1), i,"
            " CASE WHEN i % 10 = 0 THEN 'security' ELSE 'news' END, 'normal',"
            " 'Your order ' || i || ' has shipped', 'It is on its way and should arrive"
            " within three working days.', '{}', " + ts + f" FROM generate_series({lo}, {hi}) i"
        )
        conn.execute(
            "INSERT INTO deliveries (id, notification_id, channel, target, status, attempts,"
            " created_at, updated_at)"
            " SELECT gen_random_uuid(), n.id, 'email', '',"
            " CASE WHEN n.seq % 5000 = 0 THEN 'pending' ELSE 'sent' END, 1,"
            " n.created_at, n.created_at"
            f" FROM notifications n WHERE n.seq BETWEEN {lo} AND {hi} AND n.seq % 5 = 0"
        )
        conn.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at,"
            " outcome) SELECT d.id, 1, d.created_at, d.created_at, 'sent' FROM deliveries d"
            " JOIN notifications n ON n.id = d.notification_id"
            f" WHERE n.seq BETWEEN {lo} AND {hi} AND d.status = 'sent'"
        )
        print(f"  generated {hi:,} rows ({time.monotonic() - started:.0f}s)", flush=True)
    conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


class Sender(threading.Thread):
    """The worker's create path in a loop: one request of 10 recipients per transaction."""

    def __init__(self, runtime) -> None:
        super().__init__(daemon=True)
        self.runtime = runtime
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.n = 0

    def run(self) -> None:
        import random

        from clarion.core import batches, enqueue
        from clarion.core.schemas import NotificationCreate

        while not self.stop.is_set():
            who = [f"u{i}" for i in random.sample(range(1, SUBSCRIBERS + 1), 10)]
            request = NotificationCreate(recipients=who, category="news", title="hello")
            message = enqueue.prepare(request).model_dump(mode="json")
            started = time.perf_counter()
            batches.create_requests([message], **self.runtime.pipeline.kwargs())
            self.latencies.append(time.perf_counter() - started)
            self.n += 10

    def figures(self, seconds: float) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "notifications_per_s": self.n / seconds,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "max_ms": 1000 * lat[-1],
        }


def send_for(runtime, seconds: float) -> dict[str, float]:
    sender = Sender(runtime)
    sender.start()
    time.sleep(seconds)
    sender.stop.set()
    sender.join()
    return sender.figures(seconds)


class LockWatch(threading.Thread):
    """The longest wait for a lock any session of the database had, sampled."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.longest = 0.0

    def run(self) -> None:
        with psycopg.connect(common.pg_url(DATABASE), autocommit=True) as conn:
            while not self.stop.is_set():
                (wait,) = conn.execute(
                    "SELECT coalesce(max(extract(epoch from clock_timestamp() - state_change)),"
                    " 0) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    (DATABASE,),
                ).fetchone()
                self.longest = max(self.longest, float(wait))
                time.sleep(0.02)


def retention_run(runtime, settings, sending: bool) -> dict:
    from clarion.core import retention

    watch, sender = LockWatch(), Sender(runtime) if sending else None
    watch.start()
    if sender:
        sender.start()
    started = time.monotonic()
    report = retention.run(sessions=runtime.sessions, settings=settings, budget_seconds=1e9)
    seconds = time.monotonic() - started
    watch.stop.set()
    if sender:
        sender.stop.set()
        sender.join()
    watch.join()
    return {
        "report": report,
        "seconds": seconds,
        "lock_wait_s": watch.longest,
        "send": sender.figures(seconds) if sender else None,
    }


def partitions(conn: psycopg.Connection) -> dict[str, float]:
    """The same rows in a copy partitioned by month; drop those older than 180 days."""
    conn.execute(
        "CREATE TABLE notifications_p (LIKE notifications INCLUDING DEFAULTS)"
        " PARTITION BY RANGE (created_at)"
    )
    (low,) = conn.execute(
        "SELECT date_trunc('month', min(created_at)) FROM notifications"
    ).fetchone()
    months = conn.execute(
        "SELECT m, m + interval '1 month' FROM generate_series(%s::timestamptz,"
        " now(), interval '1 month') m",
        (low,),
    ).fetchall()
    for i, (start, end) in enumerate(months):
        conn.execute(
            f"CREATE TABLE notifications_p{i} PARTITION OF notifications_p"
            f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    # The primary key must include the partition key: (id, created_at), not id alone.
    conn.execute("ALTER TABLE notifications_p ADD PRIMARY KEY (id, created_at)")
    conn.execute("CREATE INDEX ON notifications_p (recipient_id, seq)")
    started = time.monotonic()
    conn.execute("INSERT INTO notifications_p SELECT * FROM notifications")
    load = time.monotonic() - started
    (cutoff,) = conn.execute("SELECT now() - interval '180 days'").fetchone()
    old = [i for i, (_, end) in enumerate(months) if end <= cutoff]
    (rows,) = conn.execute(
        "SELECT count(*) FROM notifications_p WHERE created_at < %s", (months[len(old)][0],)
    ).fetchone()
    started = time.monotonic()
    for i in old:
        conn.execute(f"ALTER TABLE notifications_p DETACH PARTITION notifications_p{i}")
        conn.execute(f"DROP TABLE notifications_p{i}")
    return {
        "rows": rows,
        "partitions": len(old),
        "seconds": time.monotonic() - started,
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--send-seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partitions", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep the generated database")
    args = parser.parse_args()

    from clarion.runtime import Runtime
    from clarion.settings import Settings

    common.warn_if_busy()
    env = common.clarion_env(DATABASE)
    if not args.reuse:
        common.reset_database(DATABASE)
        common.flush_redis()
        common.clarion("migrate", env=env)
        with psycopg.connect(common.pg_url(DATABASE), autocommit=True) as conn:
            print(f"generating {args.rows:,} notifications…", flush=True)
            took = generate(conn, args.rows)
            print(f"generated in {took:.0f}s", flush=True)
    with psycopg.connect(common.pg_url(DATABASE), autocommit=True) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("notifications", "deliveries", "delivery_attempts")
        }
        (size,) = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database()))"
        ).fetchone()
    print(f"tables: {counts}, database {size}", flush=True)

    if args.partitions:  # before the deletes, on the same rows
        with psycopg.connect(common.pg_url(DATABASE), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS notifications_p CASCADE")
            print(f"partitions: {partitions(conn)}", flush=True)
            conn.execute("DROP TABLE notifications_p CASCADE")

    settings = Settings(
        retention_category_days={"security": 730},
        retention_batch=args.batch,
        # Only the notifications pass is measured: the generated attempts are as old as
        # their notifications and go with them.
        retention_record_days={"delivery_attempts": 0},
    )
    runtime, sending = Runtime(settings), Runtime(settings)
    try:
        before = send_for(sending, args.send_seconds)
        print(f"send alone: {before}", flush=True)
        first = retention_run(runtime, settings, sending=True)
        report = first["report"]
        deleted = report.deleted["notifications"]
        print(
            f"retention: {deleted:,} notifications in {first['seconds']:.1f}s"
            f" = {deleted / first['seconds']:,.0f}/s; longest batch"
            f" {report.longest_batch_seconds * 1000:.0f} ms; longest lock wait"
            f" {first['lock_wait_s'] * 1000:.0f} ms",
            flush=True,
        )
        print(f"send during retention: {first['send']}", flush=True)
        second = retention_run(runtime, settings, sending=False)
        print(
            f"second run: deleted {second['report'].deleted}, {second['seconds']:.1f}s",
            flush=True,
        )
        after = send_for(sending, args.send_seconds)
        print(f"send after: {after}", flush=True)
    finally:
        runtime.close()
        sending.close()
    os.environ.pop("CLARION_DATABASE_URL", None)


if __name__ == "__main__":
    main()
