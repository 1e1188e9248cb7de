"""Inbox read benchmark: list and unread-count latency with 1,000,000 notifications stored.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.inbox                          # 1,000,000 rows, ~2 minutes
    .venv/bin/python -m bench.inbox --subscribers 1000       # 100,000 rows, quick

Steps:

1. Fresh database ``clarion_bench_inbox``, ``clarion migrate``, then PostgreSQL COPY of
   ``--subscribers`` x ``--per-subscriber`` notifications (UUIDv7 ids from
   ``clarion.ids.new_id()``, ``seq`` 1..N per recipient, ``created_at`` increasing, recipients
   interleaved as real traffic is, ``--read-fraction`` of them read, five categories) into
   the migrated schema with all its indexes, then VACUUM ANALYZE (what autovacuum does
   after a bulk insert). The COPY rate is printed as a side figure.
2. Over HTTP against a real ``clarion api`` process, one keep-alive httpx client, one request
   at a time, a random subscriber's token each round: ``GET /v1/me/notifications?limit=20``,
   the same with ``status=unread``, the second page through ``cursor``, and
   ``GET /v1/me/notifications/unread-count``, plus ``GET /healthz`` as the floor of HTTP +
   framework cost (no auth, no database). p50/p99 of each.
3. The same four queries through ``clarion.db.recipient_inbox`` in this process (the SQL
   level, session already connected), and the EXPLAIN (ANALYZE, BUFFERS) plan of each,
   captured from the statement Clarion actually sends.

Target (issue): p99 <= 10 ms for list and unread-count over HTTP. The cache is hot (the
whole table fits in memory), as on a server that serves its inboxes all day.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/inbox.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg
from sqlalchemy import event

from bench import _common as common
from clarion.ids import new_id

DATABASE = "clarion_bench_inbox"
TARGET_P99 = 0.010
CATEGORIES = ("links", "billing", "security", "social", "system")
SEVERITIES = ("low", "medium", "medium", "medium", "high", "critical")
COLUMNS = (
    "id, request_id, recipient_id, seq, actor_id, category, type, severity, title, body, "
    "url, metadata, dedupe_key, created_at, seen_at, read_at, archived_at, deleted_at"
)


def subscriber_id(i: int) -> str:
    return f"sub-{i:06d}"


def load(db_url: str, args: argparse.Namespace) -> None:
    """COPY subscribers and notifications in batches; print generation and COPY rates."""
    rng = random.Random(args.seed)
    subs, per = args.subscribers, args.per_subscriber
    total = subs * per
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=90) / total
    gen_time = copy_time = 0.0
    with psycopg.connect(db_url) as conn:
        t0 = time.perf_counter()
        with conn.cursor().copy(
            "COPY subscribers (id, data, seq, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(subs):
                copy.write_row((subscriber_id(i), "{}", per, start, start))
        print(f"subscribers: {subs:,} rows by COPY in {time.perf_counter() - t0:.1f} s")
        for batch_start in range(0, total, args.batch):
            t0 = time.perf_counter()
            rows = []
            for k in range(batch_start, min(total, batch_start + args.batch)):
                created = start + step * k
                read = created + timedelta(minutes=5) if rng.random() < args.read_fraction else None
                seq = k // subs + 1  # round-robin over recipients: interleaved like real traffic
                # fmt: off
                rows.append((
                    new_id(), new_id(), subscriber_id(k % subs), seq, None,
                    rng.choice(CATEGORIES), "bench", rng.choice(SEVERITIES),
                    f"Notification {seq}", "A benchmark notification body of realistic size.",
                    None, "{}", None, created, read, read, None, None,
                ))
                # fmt: on
            t1 = time.perf_counter()
            with conn.cursor().copy(f"COPY notifications ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            gen_time += t1 - t0
            copy_time += time.perf_counter() - t1
        print(
            f"notifications: {total:,} rows; generating them in Python {total / gen_time:,.0f}"
            f" rows/s; COPY into the indexed table {total / copy_time:,.0f} rows/s"
            f" ({copy_time:.1f} s)"
        )
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE subscribers, notifications")
        size = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('notifications'))"
        ).fetchone()[0]
        print(f"VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s; notifications: {size}")


def summarize(label: str, samples: dict[str, list[float]]) -> dict[str, float]:
    print(f"\n{label}")
    p99s = {}
    for name, values in samples.items():
        p50, p99 = common.percentile(values, 50), common.percentile(values, 99)
        p99s[name] = p99
        print(f"  {name:<36} n={len(values):<5} p50 {common.ms(p50):>9}  p99 {common.ms(p99):>9}")
    return p99s


def http_round(client: httpx.Client, token: str, samples: dict[str, list[float]]) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    def timed(name: str, path: str, params: dict | None = None) -> dict:
        t0 = time.perf_counter()
        response = client.get(path, params=params, headers=headers)
        elapsed = time.perf_counter() - t0
        response.raise_for_status()
        samples[name].append(elapsed)
        return response.json()

    first = timed("list limit=20", "/v1/me/notifications", {"limit": 20})
    assert len(first["items"]) == 20 and first["next_cursor"], first
    timed("list limit=20 status=unread", "/v1/me/notifications", {"limit": 20, "status": "unread"})
    page = {"limit": 20, "cursor": first["next_cursor"]}
    assert len(timed("list limit=20 cursor (page 2)", "/v1/me/notifications", page)["items"]) == 20
    timed("unread-count", "/v1/me/notifications/unread-count")
    timed("baseline: /healthz (no auth, no DB)", "/healthz")


def http_bench(port: int, subs: list[str], args: argparse.Namespace) -> dict[str, float]:
    from clarion.core.auth import issue_user_token
    from clarion.settings import Settings

    settings = Settings()
    tokens = [issue_user_token(settings, sub) for sub in subs]
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "list limit=20",
            "list limit=20 status=unread",
            "list limit=20 cursor (page 2)",
            "unread-count",
            "baseline: /healthz (no auth, no DB)",
        )
    }
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for token in tokens[: args.warmup]:
            http_round(client, token, {k: [] for k in samples})
        t0 = time.perf_counter()
        for token in tokens[args.warmup :]:
            http_round(client, token, samples)
        elapsed = time.perf_counter() - t0
    n = sum(len(v) for v in samples.values())
    print(f"\n{n:,} HTTP requests in {elapsed:.1f} s, one at a time ({n / elapsed:,.0f} req/s)")
    return summarize("HTTP (clarion api, keep-alive, sequential):", samples)


def sql_bench(db_url: str, subs: list[str], args: argparse.Namespace) -> None:
    from clarion.db import recipient_inbox as repo
    from clarion.db.recipient_inbox import InboxFilter
    from clarion.db.session import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    last: list = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        last[:] = [statement, parameters]

    def second_page_cursor(session, sub: str):
        rows = repo.page(session=session, recipient_id=sub, limit=21, before=None,
                         filters=InboxFilter())  # fmt: skip
        return rows[19].id

    queries: dict[str, Callable] = {
        "inbox(limit=21)": lambda s, sub, cur: repo.page(
            session=s, recipient_id=sub, limit=21, before=None, filters=InboxFilter()
        ),
        "inbox(limit=21, status=unread)": lambda s, sub, cur: repo.page(
            session=s, recipient_id=sub, limit=21, before=None, filters=InboxFilter(status="unread")
        ),
        "inbox(limit=21, before=cursor)": lambda s, sub, cur: repo.page(
            session=s, recipient_id=sub, limit=21, before=cur, filters=InboxFilter()
        ),
        "unread_counts()": lambda s, sub, cur: repo.unread_counts(session=s, recipient_id=sub),
    }
    samples: dict[str, list[float]] = {name: [] for name in queries}
    plans: dict[str, str] = {}
    for i, sub in enumerate(subs):
        with sessions() as session:
            cursor = second_page_cursor(session, sub)
            for name, query in queries.items():
                t0 = time.perf_counter()
                query(session, sub, cursor)
                elapsed = time.perf_counter() - t0
                if i >= args.warmup:
                    samples[name].append(elapsed)
                if i == len(subs) - 1:  # EXPLAIN what Clarion sent, in the same session
                    statement, params = last
                    result = session.connection().exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                    )
                    plans[name] = "\n".join(f"    {row[0]}" for row in result)
            session.rollback()
    summarize("SQL level (clarion.db.recipient_inbox, connection already checked out):", samples)
    for name, plan in plans.items():
        verdict = "index scan" if "Index" in plan and "Seq Scan" not in plan else "CHECK PLAN"
        print(f"\nEXPLAIN {name}: {verdict}\n{plan}")
    engine.dispose()


def run(args: argparse.Namespace) -> int:
    env = common.fresh_run(DATABASE, args.log_level)
    db_url = common.pg_url(DATABASE)
    load(db_url, args)
    rng = random.Random(args.seed + 1)
    # Warm-up rounds come first and are not counted.
    rounds = args.warmup + args.requests
    subs = [subscriber_id(rng.randrange(args.subscribers)) for _ in range(rounds)]
    with common.Processes() as procs:
        port = common.free_port()
        api = [str(common.BIN / "clarion"), "api", "--host", "127.0.0.1", "--port", str(port)]
        procs.start("api", [*api, "--workers", str(args.api_workers)], env)
        common.wait_http(f"http://127.0.0.1:{port}/readyz", procs)
        p99s = http_bench(port, subs, args)
    sql_bench(db_url, subs, args)
    worst = max(v for k, v in p99s.items() if not k.startswith("baseline"))
    met = worst <= TARGET_P99
    rows = args.subscribers * args.per_subscriber
    print(
        f"\ntarget: every HTTP p99 <= {common.ms(TARGET_P99)} with {rows:,} notifications:"
        f" worst p99 {common.ms(worst)} -> {'MET' if met else 'NOT MET'}"
    )
    return 0 if met or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--per-subscriber", type=int, default=100)
    parser.add_argument("--read-fraction", type=float, default=0.3)
    parser.add_argument(
        "--requests", type=int, default=2000, help="measured rounds (5 requests each)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured rounds first")
    parser.add_argument("--batch", type=int, default=100_000, help="rows per COPY")
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--log-level", default="WARNING", help="CLARION_LOG_LEVEL of the API")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
