"""bench.ui_profile's report: the API's and the worker's spans, the page's marks and the
timing probes of one run, put on one clock and broken down per send (docs/benchmarks/ui.md).

``python -m bench.ui_profile --analyse DIR`` reads a saved run again (:func:`analyse`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from bench._common import percentile


def spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def spans_by_trace(*paths: Path) -> dict[str, list[dict]]:
    """The spans of these files by trace id (a request's trace is its task's: Celery
    carries it)."""
    found: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for span in spans(path):
            found[span["context"]["trace_id"]].append(span)
    return found


def epoch_ms(stamp: str) -> float:
    """An OTel JSON timestamp ('2026-12-06T16:40:00.123456Z') in ms since the epoch."""
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def stats(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:<44} (none)"
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return f"  {name:<44} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (n={len(values)})"


def trace_id(i: int) -> str:
    return f"c1a71a{i:026x}"


# Each send's hops, in order: (label, the span or page event whose time ends it).
HOPS = (
    "due -> request span starts (harness, HTTP)",
    "request span -> coalescer publish starts",
    "coalescer publish (to the broker)",
    "publish end -> 202 seen by the sender",
    "publish end -> task starts (broker, worker)",
    "task start -> first SQL",
    "first SQL -> last SQL ends",
    "last SQL end -> PUBLISH starts (commit)",
    "PUBLISH (pub/sub)",
    "PUBLISH end -> a 2nd subscriber hears it",
    "PUBLISH end -> the API's hub takes it",
    "PUBLISH end -> frame in the renderer (CDP)",
    "CDP frame -> page's message event",
    "frame -> badge",
)


def per_send(
    count, due, answered, by_trace, frames, counts, origin, network, heard, hub=None
) -> list[dict]:
    """Each send's hops (ms) from its own trace and its own frame (matched by title)."""
    hub = hub or {}
    frame_at = {f[3]: origin + f[1] for f in frames if f[0] == "notification.created"}
    badge = sorted((at, n) for n, at, _ in counts)
    out = []
    for i in range(count):
        title = f"profile {i}"
        trace = by_trace.get("0x" + trace_id(i), [])
        request = _one(
            trace, lambda s: s["name"] == "POST /v1/notifications" and "SERVER" in s["kind"]
        )
        coalesce = _one(trace, lambda s: s["name"] == "clarion.coalesce publish")
        task = _one(trace, lambda s: s["name"].startswith("run/"))
        publish = _one(trace, lambda s: s["name"] == "PUBLISH")
        frame = frame_at.get(title)
        if not (request and task and publish and frame):
            continue
        sql = [
            s
            for s in trace
            if s["attributes"].get("db.system") == "postgresql"
            and epoch_ms(s["start_time"]) >= epoch_ms(task["start_time"])
        ]
        shown = next((at for at, _ in badge if at >= frame), None)
        t = {
            "i": i,
            "due": due[title],
            "request": epoch_ms(request["start_time"]),
            "publish0": epoch_ms(coalesce["start_time"]) if coalesce else None,
            "publish1": epoch_ms(coalesce["end_time"]) if coalesce else None,
            "answered": answered.get(title),
            "task": epoch_ms(task["start_time"]),
            "sql0": min((epoch_ms(s["start_time"]) for s in sql), default=None),
            "sql1": max((epoch_ms(s["end_time"]) for s in sql), default=None),
            "pub0": epoch_ms(publish["start_time"]),
            "pub1": epoch_ms(publish["end_time"]),
            "heard": heard.get(title),
            "hub": hub.get(title),
            "network": network.get(title),
            "frame": frame,
            "badge": shown,
        }
        pairs = (
            ("due", "request"),
            ("request", "publish0"),
            ("publish0", "publish1"),
            ("publish1", "answered"),
            ("publish1", "task"),
            ("task", "sql0"),
            ("sql0", "sql1"),
            ("sql1", "pub0"),
            ("pub0", "pub1"),
            ("pub1", "heard"),
            ("pub1", "hub"),
            ("pub1", "network"),
            ("network", "frame"),
            ("frame", "badge"),
        )
        t["hops"] = [
            (t[b] - t[a]) if t[a] is not None and t[b] is not None else float("nan")
            for a, b in pairs
        ]
        t["total"] = (shown - t["due"]) if shown is not None else float("nan")
        out.append(t)
    return out


def by_position(hops: list[dict], size: int = 50) -> None:
    """The browser's hops by the send's position: the page's inbox holds one more row after
    each, so a cost per row shows as hops that grow along the run."""
    if not hops:
        return
    print(f"by position in the run (each {size} sends; p50 / max, ms):")
    print(f"  {'sends':<10}{'due -> badge':>18}{'PUBLISH -> page':>18}{'frame -> badge':>18}")
    buckets: dict[int, list[dict]] = defaultdict(list)
    for t in hops:
        buckets[t["i"] // size].append(t)
    for k in sorted(buckets):
        got = buckets[k]
        cols = []
        for values in (
            [t["total"] for t in got],
            [t["network"] - t["pub1"] for t in got if t["network"] is not None],
            [t["badge"] - t["frame"] for t in got if t["badge"] is not None],
        ):
            cols.append(f"{percentile(values, 50):8.1f} / {max(values):6.1f}" if values else "")
        print(f"  {k * size:>4}-{k * size + size - 1:<5}" + "".join(f"{c:>18}" for c in cols))


def _one(trace: list[dict], test) -> dict | None:
    return next((s for s in trace if test(s)), None)


def print_slowest(hops: list[dict], n: int) -> None:
    """The n slowest sends, hop by hop, next to each hop's median over all sends."""
    if not hops:
        print("no send's hops (tracing off?)")
        return
    ranked = sorted(hops, key=lambda t: -t["total"] if t["total"] == t["total"] else 0)
    print(f"the {n} slowest of {len(hops)} sends (ms; the hops' medians on the right):")
    medians = [
        percentile([t["hops"][k] for t in hops if t["hops"][k] == t["hops"][k]], 50)
        for k in range(len(HOPS))
    ]
    head = "  " + f"{'hop':<46}" + "".join(f"#{t['i']:>6}" for t in ranked[:n]) + "  median"
    print(head)
    print(
        "  "
        + f"{'due -> badge':<46}"
        + "".join(f"{t['total']:7.1f}" for t in ranked[:n])
        + f"{percentile([t['total'] for t in hops], 50):8.1f}"
    )
    for k, label in enumerate(HOPS):
        row = "".join(f"{t['hops'][k]:7.1f}" for t in ranked[:n])
        print("  " + f"{label:<46}" + row + f"{medians[k]:8.1f}")
    wall = [
        time.strftime("%H:%M:%S", time.gmtime(t["due"] / 1000)) + f".{int(t['due'] % 1000):03d}"
        for t in ranked[:n]
    ]
    print(
        "  due at (UTC): "
        + ", ".join(f"#{t['i']} {w}" for t, w in zip(ranked[:n], wall, strict=True))
    )


def analyse(logdir: Path, slowest: int) -> None:
    saved = json.loads((logdir / "page.json").read_text())
    by_trace = spans_by_trace(logdir / "api.spans", logdir / "worker.spans")
    keys = ("due", "answered", "frames", "counts", "origin", "network", "heard")
    probes = []
    if (logdir / "probe.jsonl").exists():
        probes = [json.loads(line) for line in (logdir / "probe.jsonl").read_text().splitlines()]
    hub = {}
    for p in probes:
        if p["kind"] == "hub":
            for title in p["titles"]:
                hub.setdefault(title, p["at"])
    hops = per_send(len(saved["due"]), by_trace=by_trace, hub=hub, **{k: saved[k] for k in keys})
    print_slowest(hops, slowest)
    by_position(hops)
    ranked = sorted(hops, key=lambda t: -t["total"] if t["total"] == t["total"] else 0)
    pids = {}
    for t in ranked[:slowest]:
        near = [p for p in probes if p["kind"] != "hub" and t["due"] - 50 <= p["at"] <= t["badge"]]
        shown = ", ".join(
            f"{p['kind']} pid {pids.setdefault(p['pid'], len(pids))} {p['ms']:.0f} ms "
            f"at +{p['at'] - t['due']:.0f}" + (f" gen {p['gen']}" if "gen" in p else "")
            for p in near
        )
        print(f"  #{t['i']}: {shown or 'no GC or loop lag'}")
    gcs = [p for p in probes if p["kind"] == "gc"]
    lags = [p for p in probes if p["kind"] == "lag"]
    window = (min(saved["due"].values()), max(saved["due"].values()) + 200)
    for pid in sorted({p["pid"] for p in gcs}):
        mine = [p for p in gcs if p["pid"] == pid]
        inside = [p for p in mine if window[0] <= p["at"] <= window[1]]
        print(
            f"  GCs > 1 ms of pid {pid} ({mine[0].get('role', '?')}): {len(mine)}, max "
            f"{max(p['ms'] for p in mine):.0f} ms; while sending: {len(inside)}, max "
            f"{max((p['ms'] for p in inside), default=0):.0f} ms"
        )
    print(
        f"  over the run: {len(gcs)} GCs > 1 ms (max {max((p['ms'] for p in gcs), default=0):.0f}"
        f" ms), {len(lags)} loop lags > 5 ms (max {max((p['ms'] for p in lags), default=0):.0f} ms)"
    )
