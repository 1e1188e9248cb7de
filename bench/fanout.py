"""Topic fan-out benchmark: one POST to a topic of 100,000 subscribers → every inbox row.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.fanout                        # 100,000 subscribers, 3 rounds
    .venv/bin/python -m bench.fanout --subscribers 20000 --rounds 1     # quick
    .venv/bin/python -m bench.fanout --template      # by template + data, rendered per locale

Steps:

1. A fresh database ``clarion_bench_fanout`` (migrated); Redis databases 12 and 13 flushed.
   ``clarion api`` and ``clarion worker --concurrency 2`` (``--workers``; every lane) start as
   subprocesses. The topic ``everyone`` gets ``--subscribers`` ids through the real
   ``PUT /v1/topics/everyone/subscribers``, 10,000 per call (timed: the PUT rate).
2. Per round:
   - ``VACUUM ANALYZE subscribers`` (the PostgreSQL here runs with autovacuum off), and a
     ``CHECKPOINT`` before each of the three phases below, so that none of them pays for
     a checkpoint the previous one's WAL triggered;
   - **baseline**: the same rows the fan-out stores (one ``notifications`` row per
     subscriber, same columns, same indexes and foreign keys; a notification in the inbox
     is its own in-app delivery, no delivery row is stored for it) written by plain psycopg
     in one transaction: by COPY as text, by COPY in binary (the baseline is the faster
     of the two; Clarion's COPY goes in binary since 2026-12-07), then by ``executemany``
     of INSERTs;
   - each of the four timed phases (the three baselines and Clarion) starts from the same
     state: the table emptied, then one earlier notification per subscriber (another
     request's, untimed COPY), analyzed, and a checkpoint. Like with like: Clarion's rows
     land beside each recipient's earlier row in the indexes that start with the
     recipient, which costs more per row than appending to an emptied table (until
     2026-12-07 the baselines wrote into an emptied one). Analyzed, because with this
     machine's autovacuum off an emptied, never-analyzed table would keep the workers'
     prepared statements on the sequential scans they were first planned with;
   - **Clarion**: one ``POST /v1/notifications {"topic": "everyone", ...}``; the clock runs
     from just before the POST until ``count(*)`` of the request's notifications reaches
     the subscriber count (polled at half the expected time left, 10 ms to ``--poll``
     0.5 s apart; the counts' own PostgreSQL CPU is printed), then every one must be in
     the inbox, with no delivery row. Recipients/s =
     subscribers / that time. The fan-out task's own walk (from its ``fanouts`` row) and
     the CPU per process group are printed too, and the worker's prefork parent alone
     (Celery's consumer: it reads each page's message, tracks it unacked, pipes it to a
     child and acknowledges it; the children run the tasks).
3. Each round's figures, then the median of the rounds, next to the targets:
   ≥ 20,000 recipients/s and ≥ 0.5 × the raw insert rate (COPY, the faster baseline; issue 18).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/fanout.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from bench import _common as common

DATABASE = "clarion_bench_fanout"
TOPIC = "everyone"
PUT_BATCH = 10_000
TARGET_RATE, TARGET_RATIO = 20_000.0, 0.5
NOTIFICATION_COLUMNS = (
    "id, request_id, recipient_id, seq, category, type, severity, title, body, metadata,"
    " in_inbox, created_at"
)
TRUNCATE = "TRUNCATE deliveries, notifications, fanouts CASCADE"
COPY = f"COPY notifications ({NOTIFICATION_COLUMNS}) FROM STDIN"
COPY_BINARY = f"{COPY} (FORMAT BINARY)"
COPY_TYPES = ["uuid", "uuid", "varchar", "int8", "varchar", "varchar", "varchar", "text", "text",
              "jsonb", "bool", "timestamptz"]  # fmt: skip
# --template: a built-in template, rendered at create in each recipient's locale.
TEMPLATED = {
    "template": "link_expired",
    "data": {"link": {"id": 1, "label": "go.example/abc"}, "expires": "2026-11-30 12:00 UTC"},
}


def rows_for(subscribers: list[str]) -> list[tuple]:
    """The notification rows of one fan-out, as the create step makes them (minus what it
    computes: the ids here are plain UUIDv7s). A notification in the inbox is its own
    in-app delivery: the create step stores no delivery row for it."""
    from psycopg.types.json import Jsonb

    from clarion.ids import new_id

    now, request = datetime.now(UTC), new_id()
    return [
        (new_id(), request, sid, 1, "news", "release", "medium", "v2 is out", "Read more.",
         Jsonb({}), True, now)
        for sid in subscribers
    ]  # fmt: skip


def prefill(url: str, notes: list[tuple]) -> None:
    """The state every timed phase starts from: the table emptied, then one earlier
    notification per subscriber (another request's) and current statistics. Clarion's rows
    land beside each recipient's earlier rows in the indexes that start with the recipient
    (splitting their pages), so the baselines write into the same state rather than into
    an emptied table, which is cheaper per row. Analyzed: with this machine's autovacuum
    off, an emptied, never-analyzed table would keep the workers' prepared statements on
    the sequential-scan plans they were first given all round."""
    with psycopg.connect(url) as conn:
        conn.execute(TRUNCATE)
        with conn.cursor() as cur, cur.copy(COPY) as copy:
            for row in notes:
                copy.write_row(row)
        conn.commit()
        conn.execute("ANALYZE notifications, deliveries")
        conn.commit()


def raw_copy(url: str, notes: list[tuple], binary: bool = False) -> float:
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(COPY_BINARY if binary else COPY) as copy:
            if binary:
                copy.set_types(COPY_TYPES)
            for row in notes:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - t0


def raw_copy_binary(url: str, notes: list[tuple]) -> float:
    return raw_copy(url, notes, binary=True)


def raw_executemany(url: str, notes: list[tuple]) -> float:
    marks = ", ".join(["%s"] * 12)
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO notifications ({NOTIFICATION_COLUMNS}) VALUES ({marks})", notes
            )
        conn.commit()
        return time.perf_counter() - t0


def vacuum(url: str) -> None:
    """VACUUM ANALYZE the subscribers, as autovacuum would in production (this machine's
    PostgreSQL runs with autovacuum off): each round updates every subscriber's sequence,
    and the dead rows of earlier rounds would slow the later ones down. Not the emptied
    notifications and deliveries: analyzed while empty, they would be planned as empty
    (sequential scans) all through the next round's 100,000 inserts."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE subscribers, topic_subscribers")


def checkpoint(url: str) -> None:
    """Start a phase right after a checkpoint. A round writes a few hundred MB of WAL, so
    with max_wal_size at 1 GB a checkpoint (and the full-page images after it) would
    otherwise land in whichever phase happens to cross the line."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def fill_topic(base: str, key: str, subscribers: list[str]) -> float:
    """PUT the subscribers through the API, 10,000 per call; returns the seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, len(subscribers), PUT_BATCH):
        done = httpx.put(
            f"{base}/v1/topics/{TOPIC}/subscribers",
            json={"add": subscribers[start : start + PUT_BATCH]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        done.raise_for_status()
    return time.perf_counter() - t0


def stored(conn: psycopg.Connection, request_id: str) -> int:
    query = "SELECT count(*) FROM notifications WHERE request_id = %s"
    return conn.execute(query, (request_id,)).fetchone()[0]


def shown(conn: psycopg.Connection, request_id: str) -> tuple[int, int]:
    """(in the inbox, delivery rows) of the request's notifications."""
    return conn.execute(
        "SELECT count(*) FILTER (WHERE in_inbox),"
        " (SELECT count(*) FROM deliveries d JOIN notifications m ON m.id = d.notification_id"
        "  WHERE m.request_id = %(r)s)"
        " FROM notifications n WHERE n.request_id = %(r)s",
        {"r": request_id},
    ).fetchone()


def backend_cpu(conn: psycopg.Connection) -> float:
    """CPU seconds of the connection's server process so far (PostgreSQL on this machine)."""
    try:
        return int(Path(f"/proc/{conn.info.backend_pid}/schedstat").read_text().split()[0]) / 1e9
    except OSError:
        return 0.0


def next_poll(count: int, total: int, elapsed: float, ceiling: float) -> float:
    """Half the expected time to the end at the rate so far, within [0.01, ceiling]: few
    counts (each reads up to 100,000 index entries, on the same two cores) while far from
    the end, and a close one at the end."""
    if count == 0:
        return ceiling
    return max(0.01, min(ceiling, 0.5 * (total - count) * elapsed / count))


def fan_out(base: str, key: str, url: str, total: int, args, procs, groups) -> dict:
    """One POST to the topic, timed until every inbox row is stored."""
    content = TEMPLATED if args.template else {"title": "v2 is out", "body": "Read more."}
    body = {"topic": TOPIC, "category": "news", "type": "release", "channels": ["in_app"]}
    body.update(content)
    headers = {"Authorization": f"Bearer {key}"}
    with psycopg.connect(url, autocommit=True) as conn:
        parent = common.own_cpu(groups["worker"])
        before, t0 = common.cpu_snapshot(groups), time.perf_counter()
        answer = httpx.post(f"{base}/v1/notifications", json=body, headers=headers, timeout=30)
        accepted = time.perf_counter() - t0
        answer.raise_for_status()
        request_id = answer.json()["request_id"]
        deadline = t0 + args.timeout
        polls, poll_cpu = 0, backend_cpu(conn)
        while (count := stored(conn, request_id)) < total:
            polls += 1
            procs.check_alive()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{count:,} of {total:,} after {args.timeout} s")
            time.sleep(next_poll(count, total, time.perf_counter() - t0, args.poll))
        took = time.perf_counter() - t0
        after = common.cpu_snapshot(groups)
        parent = common.own_cpu(groups["worker"]) - parent
        poll_cpu = backend_cpu(conn) - poll_cpu
        cpu = common.cpu_report(before, after, took)
        per = common.cpu_per(before, after, total, "recipient")
        walk = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at), batches FROM fanouts"
            " WHERE request_id = %s",
            (request_id,),
        ).fetchone()
        rows = (count, *shown(conn, request_id))
    status = httpx.get(f"{base}/v1/requests/{request_id}", headers=headers).json()
    ok = rows == (total, total, 0) and status["done"] and status["created"] == total
    return {"seconds": took, "accepted": accepted, "walk": walk, "cpu": cpu, "per": per,
            "ok": ok, "stored": rows, "polls": (polls + 1, poll_cpu), "parent": parent}  # fmt: skip


def report_round(n: int, total: int, copy_s: float, many_s: float, got: dict) -> None:
    rate = total / got["seconds"]
    walk, batches = got["walk"]
    print(f"  baseline COPY        {copy_s:6.2f} s  {total / copy_s:9,.0f} recipients/s")
    print(f"  baseline executemany {many_s:6.2f} s  {total / many_s:9,.0f} recipients/s")
    print(
        f"  Clarion fan-out      {got['seconds']:6.2f} s  {rate:9,.0f} recipients/s"
        f"  (POST answered in {got['accepted'] * 1000:.1f} ms; the walk enqueued"
        f" {batches} create tasks in {walk:.2f} s)"
    )
    print(
        f"  ratio to COPY {rate * copy_s / total:.2f}, to executemany {rate * many_s / total:.2f}"
    )
    print(f"  CPU: {got['cpu']}")
    print(f"  CPU: {got['per']}")
    print(
        f"  worker: prefork parent {got['parent'] * 1e6 / total:.1f} µs per recipient"
        f" ({got['parent'] * 1e3 / batches:.2f} ms per page)"
    )
    polls, poll_cpu = got["polls"]
    print(
        f"  polling: {polls} counts, {poll_cpu * 1e3:.0f} ms of PostgreSQL CPU"
        f" ({poll_cpu * 1e6 / total:.2f} µs per recipient)"
    )
    if not got["ok"]:
        print(
            f"  !! (stored, in the inbox, delivery rows) {got['stored']} of {total:,},"
            " or progress not done"
        )


def run(args: argparse.Namespace) -> int:
    env = common.fresh_run(DATABASE, args.log_level)
    if args.batch:
        env["CLARION_FANOUT_BATCH"] = str(args.batch)
    url = common.pg_url(DATABASE)
    key = common.clarion("keys", "create", "bench", "--scope", "notify", env=env).split()[-1]
    subscribers = [f"sub-{i:06d}" for i in range(args.subscribers)]
    total = len(subscribers)
    port = common.free_port()
    base = f"http://127.0.0.1:{port}"
    with common.Processes() as procs:
        print(f"process logs: {procs.logdir}")
        api = procs.start("api", [str(common.BIN / "clarion"), "api", "--port", str(port)], env)
        worker_argv = [str(common.BIN / "clarion"), "worker", "--concurrency", str(args.workers)]
        worker = procs.start("worker", worker_argv, env)
        common.wait_http(f"{base}/readyz", procs)
        groups = {"api": api.pid, "worker": worker.pid}
        put = fill_topic(base, key, subscribers)
        print(
            f"topic {TOPIC!r}: {total:,} subscribers by PUT in {put:.2f} s ({total / put:,.0f}/s)"
        )
        notes = rows_for(subscribers)
        rounds = []
        for n in range(1, args.rounds + 1):
            vacuum(url)
            timed = []
            for phase in (raw_copy, raw_copy_binary, raw_executemany):
                prefill(url, rows_for(subscribers))
                checkpoint(url)
                timed.append(phase(url, notes))
            text_s, binary_s, many_s = timed
            copy_s = min(text_s, binary_s)  # the baseline is the faster of the two formats
            print(f"\nround {n}: baseline COPY as text {text_s:.2f} s, binary {binary_s:.2f} s")
            prefill(url, rows_for(subscribers))
            checkpoint(url)
            got = fan_out(base, key, url, total, args, procs, groups)
            report_round(n, total, copy_s, many_s, got)
            rounds.append((copy_s, many_s, got))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(TRUNCATE)
    rate = statistics.median(total / got["seconds"] for *_, got in rounds)
    copy_rate = statistics.median(total / c for c, _, _ in rounds)
    many_rate = statistics.median(total / m for _, m, _ in rounds)
    ok = all(got["ok"] for *_, got in rounds)
    met = rate >= TARGET_RATE and rate >= TARGET_RATIO * copy_rate
    print(
        f"\nmedian of {len(rounds)}: Clarion {rate:,.0f} recipients/s; raw COPY"
        f" {copy_rate:,.0f}/s (ratio {rate / copy_rate:.2f}), executemany {many_rate:,.0f}/s"
        f" (ratio {rate / many_rate:.2f})"
    )
    print(
        f"target ≥ {TARGET_RATE:,.0f}/s and ≥ {TARGET_RATIO} × COPY: {'met' if met else 'NOT MET'}"
        f"; every row stored: {'yes' if ok else 'NO'}"
    )
    if not ok:
        return 1
    return 0 if met or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, help="CLARION_FANOUT_BATCH (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="the worker's --concurrency")
    parser.add_argument(
        "--template", action="store_true", help="send by template (link_expired) + data"
    )
    parser.add_argument("--poll", type=float, default=0.5, help="longest wait between counts")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
