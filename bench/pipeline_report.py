"""What ``bench.pipeline`` prints of each phase: rates, latencies, CPU per notification,
nothing lost, and the targets against the no-op baseline."""

from __future__ import annotations

import psycopg

from bench import _common as common
from bench import loadgen
from bench.loadgen import Load

# DESIGN.md "Throughput" asks >= 500/s and >= 0.4 x; issue 18 raised the ratio to 1.0 x.
TARGET_RATE, TARGET_RATIO = 500.0, 1.0


def targets(load: Load, rate: float, noop_rate: float) -> bool:
    """Saturation phases: print the ratio to the no-op and whether the targets are met."""
    if load.label != "saturation":
        return True
    ratio = rate / noop_rate
    met = rate >= TARGET_RATE and ratio >= TARGET_RATIO
    print(
        f"  ratio to the no-op baseline ({noop_rate:,.0f} tasks/s): {ratio:.2f}\n"
        f"  target >= {TARGET_RATE:.0f} notifications/s and >= {TARGET_RATIO} x baseline: "
        f"{'MET' if met else 'NOT MET'}"
    )
    return met


def report_wrk(load: Load, noop_rate: float) -> tuple:
    """Print a wrk saturation phase; (nothing lost or refused, throughput targets met)."""
    accepted = load.wrk["status"].get("202", 0)
    print(
        f"\n{load.recipients} recipient(s) per POST, {load.label} (wrk, closed loop, "
        f"{load.connections} connections): {accepted:,} POSTs accepted at "
        f"{accepted / (load.end - load.start):,.0f}/s"
    )
    lines, ok, rate = loadgen.wrk_lines(load)
    print("\n".join(lines))
    if not rate:
        return False, False
    print(f"  CPU, % of one core (2 cores = 200%): {load.cpu}")
    if load.rows:
        api, worker = (load.cpu_s.get(k, 0.0) * 1000 / load.rows for k in ("api", "worker"))
        print(
            f"  CPU per notification: api {api:.3f} ms, worker {worker:.3f} ms, "
            f"api + worker {api + worker:.3f} ms"
        )
    return ok, targets(load, rate, noop_rate)


def report(load: Load, events: dict[str, float], noop_rate: float, db_url: str) -> tuple:
    """Print one phase's figures; (nothing lost or refused, throughput targets met)."""
    if load.generator == "wrk":
        return report_wrk(load, noop_rate)
    accepted = len(load.sent_at)
    latencies = [events[i] - t for i, t in load.sent_at.items() if i in events]
    posts = len(load.post_latency)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM notifications WHERE id = ANY(%s::uuid[])", [list(load.sent_at)]
        ).fetchone()[0]
    if not load.post_latency:
        print(
            f"\n{load.recipients} recipient(s), {load.label}: no POST accepted {dict(load.errors)}"
        )
        return False, False
    offered = f"offered {load.offered:,.0f} POST/s" if load.offered else "closed loop"
    print(
        f"\n{load.recipients} recipient(s) per POST, {load.label} ({offered}, "
        f"{load.connections} connections): {posts:,} POSTs accepted at "
        f"{posts / (load.end - load.start):,.0f}/s, 202 in p50 "
        f"{common.ms(common.percentile(load.post_latency, 50))} p99 "
        f"{common.ms(common.percentile(load.post_latency, 99))}"
        + (f", errors {dict(load.errors)}" if load.errors else "")
    )
    if not latencies:
        print("  no events received")
        return False, False
    wall = max(events[i] for i in load.sent_at if i in events) - load.start
    rate, lost = len(latencies) / wall, accepted - rows
    print(
        f"  notifications accepted {accepted:,}, rows in PostgreSQL {rows:,}, events "
        f"{len(latencies):,}: {'nothing lost' if not lost else f'{lost:,} MISSING'}"
    )
    print(f"  sustained {rate:,.0f} notifications/s over {wall:.1f} s (first POST -> last row)")
    print(
        f"  latency POST -> row: p50 {common.ms(common.percentile(latencies, 50))}, "
        f"p99 {common.ms(common.percentile(latencies, 99))}, max {common.ms(max(latencies))}"
    )
    if load.offered and posts / (load.end - load.start) < 0.95 * load.offered:
        print("  !! the httpx client fell behind the offered rate: latency includes its lag")
    print(f"  CPU, % of one core (2 cores = 200%): {load.cpu}")
    return not lost and not load.errors, targets(load, rate, noop_rate)
