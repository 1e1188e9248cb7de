"""What ``bench.stream`` reports: the rate a paced phase received, and the summary lines
(each target, its figure and MET / NOT MET)."""

from __future__ import annotations

from bench import _common as common

TARGET_CONNECTIONS, TARGET_RSS_RATIO, TARGET_FANOUT, TARGET_P99 = 10_000, 1.5, 0.7, 0.050


def received_rate(phase: dict) -> float:
    """Notifications received / (first POST -> last one received)."""
    load, ids = phase["load"], phase["stats"]["ids"]
    times = [t for i, t in ids.items() if i in load.sent_at]
    return len(times) / (max(times) - load.start) if times else 0.0


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def summary_12(held, wall, per, bare_per, floor_per, rate, bare_rate, met: list) -> list[str]:
    ok1 = held >= TARGET_CONNECTIONS and per <= TARGET_RSS_RATIO * bare_per
    ok2 = rate >= TARGET_FANOUT * bare_rate
    met += [ok1, ok2]
    return [
        f"  1. {held:,} connections (connected in {wall:.1f} s), {per:.1f} KiB each"
        f" vs bare {bare_per:.1f} KiB: {per / bare_per:.2f} x (target >= "
        f"{TARGET_CONNECTIONS:,} at <= {TARGET_RSS_RATIO} x): {verdict(ok1)}",
        f"     reference: raw ASGI on uvicorn {floor_per:.1f} KiB = {floor_per / bare_per:.2f} x",
        f"  2. fan-out {rate:,.0f} frames/s vs bare {bare_rate:,.0f}: {rate / bare_rate:.2f} x"
        f" (target >= {TARGET_FANOUT} x): {verdict(ok2)}",
    ]


def summary_3(args, paced: tuple, p99_half: float, half: float, top: float, met) -> list[str]:
    p99, _, hop = paced
    ok3 = p99 <= TARGET_P99
    met.append(ok3)
    ms = common.ms
    return [
        f"  3. create -> client p99 {ms(p99)} at {args.rate:.0f}/s (target <= {ms(TARGET_P99)}):"
        f" {verdict(ok3)}; published -> client p99 {ms(hop)}",
        f"     at {half:,.0f}/s ({args.max_fraction:.0%} of {top:,.0f}/s): p99 {ms(p99_half)}",
    ]
