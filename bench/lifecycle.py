"""Lifecycle pack benchmark: the pack's scan rules over a source of 1,000,000 links.

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.lifecycle                    # 1,000,000 links, ~1.5 min
    .venv/bin/python -m bench.lifecycle --links 100000     # quick
    .venv/bin/python -m bench.lifecycle --no-index         # the source without indexes

Steps:

1. Fresh databases: ``clarion_bench_lifecycle`` (Clarion, migrated) and
   ``clarion_bench_lifecycle_src`` (the source). COPY ``--links`` links and one campaign per
   ``--links-per-campaign`` into the documented schema (timestamptz), then the indexes the
   pack's docstring recommends (unless ``--no-index``) and VACUUM ANALYZE. ``--matching``
   (1 %) of the links match: half expire within the next 72 h (``link_expiring_soon``),
   half expired in the last 7 days (``link_expired``); as many again lie in those windows
   but are inactive. The rest expire 4 to 730 days ahead, expired 8 to 730 days ago, or
   never. Campaigns follow the same shape.
2. Baseline: the raw SELECT of the matching rows (both windows, same conditions, psycopg,
   all rows fetched), median of three.
3. The two link rules with ``clarion.engine.runner.run_rule`` in this process, first
   scan only (iterating the rule's candidates, nothing persisted; median of three), then
   a real run (candidates persisted through the create step into Clarion's database),
   then a second run five minutes later (every candidate a duplicate). Then the same two
   runs of the other five rules.

Target (issue): one run over 1,000,000 links within a minute.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # also runnable as `python bench/lifecycle.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import _common as common

DATABASE = "clarion_bench_lifecycle"
SOURCE = "clarion_bench_lifecycle_src"
TARGET_SECONDS = 60.0
NEXT_BEAT = timedelta(minutes=5)  # the second run: the next beat, every candidate a duplicate
LINK_RULES = ("link_expiring_soon", "link_expired")
OTHER_RULES = (
    "expired_link_has_active_campaign",
    "active_link_has_expired_campaign",
    "campaign_expiring_soon",
    "campaign_expired",
    "campaign_has_expired_links",
)
SCHEMA = """
CREATE TABLE campaigns (id bigint PRIMARY KEY, owner text, name text, starts_at timestamptz,
                        ends_at timestamptz, is_active boolean NOT NULL);
CREATE TABLE links (id bigint PRIMARY KEY, owner text, url text, expires_at timestamptz,
                    is_active boolean NOT NULL, campaign_id bigint);
"""
INDEXES = (
    "CREATE INDEX ON links (expires_at)",
    "CREATE INDEX ON links (campaign_id)",
    "CREATE INDEX ON campaigns (ends_at)",
)
# The two link windows at the pack's defaults (72 h ahead, 7 days back).
RAW_SELECT = """
SELECT id, owner, url, expires_at, campaign_id FROM links
WHERE is_active IS TRUE AND (
    (expires_at > %(now)s AND expires_at <= %(now)s + interval '72 hours')
 OR (expires_at > %(now)s - interval '7 days' AND expires_at <= %(now)s))
"""


def when(rng: random.Random, now: datetime, matching: bool) -> datetime | None:
    """An expiry: inside one of the two windows (kept an hour clear of their edges, so a
    run five minutes later sees the same rows), or well outside both."""
    hours = timedelta(hours=1)
    if matching:
        if rng.random() < 0.5:
            return now + rng.uniform(1, 71) * hours
        return now - rng.uniform(1, 7 * 24 - 1) * hours
    r = rng.random()
    if r < 0.6:
        return now + rng.uniform(4, 730) * 24 * hours
    if r < 0.9:
        return now - rng.uniform(8, 730) * 24 * hours
    return None


def load(url: str, args: argparse.Namespace, now: datetime) -> None:
    rng = random.Random(args.seed)
    campaigns = max(1, args.links // args.links_per_campaign)
    every = round(1 / args.matching)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        t0 = time.perf_counter()
        with conn.cursor().copy(
            "COPY campaigns (id, owner, name, starts_at, ends_at, is_active) FROM STDIN"
        ) as copy:
            for i in range(1, campaigns + 1):
                ends = when(rng, now, i % every == 0)
                starts = (ends or now) - timedelta(days=30)
                owner = f"manager-{rng.randrange(args.owners // 10 or 1)}"
                copy.write_row((i, owner, f"Campaign {i}", starts, ends, rng.random() < 0.95))
        with conn.cursor().copy(
            "COPY links (id, owner, url, expires_at, is_active, campaign_id) FROM STDIN"
        ) as copy:
            for i in range(1, args.links + 1):
                # Every `every`-th link matches; the one after it lies in a window, inactive.
                in_window = i % every in (0, 1)
                active = i % every == 0 or (not in_window and rng.random() < 0.95)
                campaign = rng.randrange(1, campaigns + 1) if rng.random() < 0.8 else None
                owner = f"owner-{rng.randrange(args.owners)}"
                expires = when(rng, now, in_window)
                copy.write_row((i, owner, f"https://go.example/{i:x}", expires, active, campaign))
        loaded = time.perf_counter() - t0
        print(f"source: {args.links:,} links, {campaigns:,} campaigns by COPY in {loaded:.1f} s")
        t0 = time.perf_counter()
        for statement in () if args.no_index else INDEXES:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        indexes = "no indexes" if args.no_index else "3 indexes"
        took = time.perf_counter() - t0
        print(f"        {indexes} + VACUUM ANALYZE in {took:.1f} s; {size.fetchone()[0]}")


def raw_select(url: str, now: datetime) -> tuple[int, float]:
    """Rows and seconds of the baseline: the matching rows, fetched by plain psycopg."""
    times, rows = [], 0
    with psycopg.connect(url) as conn:
        for _ in range(3):
            t0 = time.perf_counter()
            rows = len(conn.execute(RAW_SELECT, {"now": now}).fetchall())
            times.append(time.perf_counter() - t0)
    return rows, statistics.median(times)


def scan_only(rt, key: str, now: datetime) -> tuple[int, float]:
    """The rule's candidates, built and thrown away: the source side of a run."""
    from clarion.engine.rules import RunContext

    rule, times, count = rt.rules.build(key), [], 0
    for _ in range(3):
        t0 = time.perf_counter()
        count = sum(1 for _ in rule.candidates(RunContext(now=now, runtime=rt)))
        times.append(time.perf_counter() - t0)
    return count, statistics.median(times)


def timed_runs(rt, keys, as_of: datetime) -> dict[str, tuple[object, float]]:
    from clarion.engine.runner import run_rule

    out = {}
    for key in keys:
        t0 = time.perf_counter()
        result = run_rule(key, runtime=rt, rules=rt.rules, trigger="manual", as_of=as_of)
        out[key] = (result, time.perf_counter() - t0)
        if result.error:
            raise RuntimeError(f"{key} failed: {result.error}")
    return out


def empty_clarion() -> None:
    """Clarion's own bench database back to no notifications, so a first run is first."""
    with psycopg.connect(common.pg_url(DATABASE), autocommit=True) as conn:
        conn.execute("TRUNCATE notifications, deliveries, subscribers, rule_runs CASCADE")


def report(label: str, runs: dict) -> None:
    for key, (result, seconds) in runs.items():
        rate = result.created / seconds if seconds else 0.0
        print(
            f"  {label} {key:34s} {seconds:6.2f} s  candidates {result.candidates:6,}"
            f"  created {result.created:6,} ({rate:7,.0f}/s)  duplicates {result.duplicates:6,}"
        )


def run(args: argparse.Namespace) -> int:
    common.fresh_run(DATABASE, args.log_level)
    common.reset_database(SOURCE)
    src_url = common.pg_url(SOURCE)
    now = datetime.now(UTC).replace(microsecond=0)
    load(src_url, args, now)

    from clarion.engine.sources import dispose_engines
    from clarion.runtime import Runtime
    from clarion.settings import Settings

    rt = Runtime(Settings(rules={"lifecycle": {"source_url": src_url}}))
    try:
        rows, raw = raw_select(src_url, now)
        print(f"\nbaseline: raw SELECT of the matching links: {rows:,} rows in {raw:.3f} s")
        print(f"          ({rows / raw:,.0f} rows/s, median of 3)")
        print("\nscan only (candidates built, nothing persisted; median of 3):")
        scanned = 0
        for key in LINK_RULES:
            count, seconds = scan_only(rt, key, now)
            scanned += count
            print(f"  {key:34s} {seconds:6.3f} s  {count:,} candidates ({count / seconds:,.0f}/s)")
        print(f"\nfirst and second run of both link rules, {args.rounds} rounds:")
        before, t0 = common.cpu_snapshot({}), time.perf_counter()
        firsts, reruns = [], []
        for n in range(1, args.rounds + 1):
            empty_clarion()
            first = timed_runs(rt, LINK_RULES, now)
            firsts.append(sum(s for _, s in first.values()))
            reruns.append(sum(s for _, s in timed_runs(rt, LINK_RULES, now + NEXT_BEAT).values()))
            created = sum(result.created for result, _ in first.values())
            print(
                f"  round {n}: first {firsts[-1]:.2f} s ({created:,} created,"
                f" {created / firsts[-1]:,.0f}/s), second {reruns[-1]:.2f} s (all duplicates)"
            )
        cpu = common.cpu_report(before, common.cpu_snapshot({}), time.perf_counter() - t0)
        total, second = statistics.median(firsts), statistics.median(reruns)
        print(f"  median: first {total:.2f} s = {total / raw:.0f}x the raw SELECT;")
        print(f"          second {second:.2f} s = {second / raw:.0f}x the raw SELECT")
        print(f"  CPU over the rounds: {cpu}")
        print("\nlast round, per rule:")
        report("first ", first)
        print("\nthe other five rules (first run, then the second):")
        report("first ", timed_runs(rt, OTHER_RULES, now))
        report("second", timed_runs(rt, OTHER_RULES, now + NEXT_BEAT))
    finally:
        rt.close()
        dispose_engines()

    ok = created == rows == scanned and total <= TARGET_SECONDS
    print(
        f"\n{args.links:,} links: {created:,} notifications in {total:.2f} s median"
        f" ({created / total:,.0f}/s); no-op rerun {second:.2f} s;"
        f" target {TARGET_SECONDS:.0f} s {'met' if ok else 'MISSED'}"
    )
    if created != rows:
        print(f"  !! created {created:,} but the raw SELECT matched {rows:,}")
    return 0 if ok or not args.strict else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--links-per-campaign", type=int, default=100)
    parser.add_argument("--matching", type=float, default=0.01, help="fraction of links")
    parser.add_argument("--owners", type=int, default=50_000, help="distinct link owners")
    parser.add_argument("--no-index", action="store_true", help="no index on the source")
    parser.add_argument("--rounds", type=int, default=3, help="first+second runs, median")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
