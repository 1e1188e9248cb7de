"""Where the notification centre's latency goes (docs/benchmarks/ui.md, "Breakdown").

    .venv/bin/python -m bench.ui_profile            # ~1 min

The same stack as bench/ui.py, with tracing on (``CLARION_OTEL_FILE``: the API's and the
worker's spans as JSON lines, wall-clock timestamps) and the browser's side seen by an init
script (WebSocket frames, fetches, the badge), all on the machine's one clock:

1. POST -> badge, per send: due -> the API's request span -> the ``create`` task's run ->
   its pub/sub PUBLISH -> the WebSocket frame in the page -> the badge; medians and p99 of
   each step.
2. Page load -> count, per reload: the document, the last module, the sign-in token, the
   WebSocket (constructed, open, first frame), the badge; medians of each.

Tracing costs time of its own (each span is written as it ends), so the steps add up to more
than bench/ui.py's figures: read it for where the time goes, bench/ui.py for how much.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from bench._common import BIN, Processes, fresh_run, percentile, wait_http
from bench.ui import FLAGS, OBSERVE, Run, open_signed_in
from bench.ui_profile_report import analyse, epoch_ms, spans_by_trace, stats, trace_id

DATABASE = "clarion_bench_ui"
# The page's side: every WebSocket frame and fetch, on performance.now() (navigation start).
WATCH = """
window.__ws = [];
window.__fetches = [];
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    window.__ws.push(['new', performance.now()]);
    this.addEventListener('open', () => window.__ws.push(['open', performance.now()]));
    this.addEventListener('message', (m) => {
      let e = {};
      try { e = JSON.parse(m.data); } catch {}
      window.__ws.push([e.type, performance.now(), e.data && e.data.id || null,
                        e.data && e.data.title || null]);
    });
  }
};
const nativeFetch = window.fetch;
window.fetch = function (input, init) {
  const url = String(input && input.url || input);
  const t0 = performance.now();
  return nativeFetch.call(this, input, init).then((r) => {
    window.__fetches.push([url, t0, performance.now()]);
    return r;
  });
};
"""


def post_path(
    browser, run: Run, rate: float, count: int, api: Path, worker: Path, slowest: int = 0
) -> None:
    context = browser.new_context()
    context.add_init_script(OBSERVE)
    context.add_init_script(WATCH)
    page = context.new_page()
    # The stream as Chromium reports it (CDP, stamped by the renderer when it takes a frame),
    # on the wall clock by the handshake event's own pair of stamps.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    net: dict[str, Any] = {"offset": None, "frames": []}

    def handshake(e: dict) -> None:
        if net["offset"] is None:
            net["offset"] = e["wallTime"] - e["timestamp"]

    cdp.on("Network.webSocketWillSendHandshakeRequest", handshake)
    cdp.on(
        "Network.webSocketFrameReceived",
        lambda e: net["frames"].append((e["timestamp"], e["response"]["payloadData"][:300])),
    )
    page.goto(run.link("profile-live"))
    page.wait_for_function(
        "() => document.querySelector('clarion-bell')?.client?.status === 'live'"
    )
    # A second subscriber of the event channel: when Redis delivered each event.
    heard: dict[str, float] = {}
    listener = threading.Thread(target=listen, args=(run, heard), daemon=True)
    listener.start()
    time.sleep(1)
    origin = page.evaluate("() => performance.timeOrigin")
    due: dict[str, float] = {}
    answered: dict[str, float] = {}
    threads = []

    def send(i: int) -> None:
        title = f"profile {i}"
        # The send's trace id names it, so its spans are found without guessing.
        run.send("profile-live", title, {"traceparent": f"00-{trace_id(i)}-{i + 1:016x}-01"})
        answered[title] = time.time() * 1000

    start = time.time()
    for i in range(count):
        at = start + i / rate
        time.sleep(max(0.0, at - time.time()))
        due[f"profile {i}"] = max(at, time.time()) * 1000
        t = threading.Thread(target=send, args=(i,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    page.wait_for_function(f"() => window.__counts.some(c => c[0] >= {count})", timeout=30_000)
    frames = page.evaluate("() => window.__ws")
    counts = page.evaluate("() => window.__counts")
    context.close()
    time.sleep(1)  # the last spans reach their files

    by_trace = spans_by_trace(api, worker)
    steps: dict[str, list[float]] = defaultdict(list)
    frame_at = {f[2]: origin + f[1] for f in frames if f[0] == "notification.created"}
    badge_at: dict[int, float] = {}
    for n, at, _ in counts:
        badge_at.setdefault(int(n), at)
    for trace in by_trace.values():
        request = next((s for s in trace if s["name"] == "POST /v1/notifications"), None)
        run_span = next((s for s in trace if s["name"].startswith("run/")), None)
        publish = [s for s in trace if s["name"] == "PUBLISH"]
        if not (request and run_span and publish):
            continue
        if epoch_ms(request["start_time"]) < start * 1000 - 1:
            continue  # one of the fill's sends
        steps["api: request span"].append(
            epoch_ms(request["end_time"]) - epoch_ms(request["start_time"])
        )
        steps["api end -> task starts (broker, prefetch)"].append(
            epoch_ms(run_span["start_time"]) - epoch_ms(request["end_time"])
        )
        steps["task start -> PUBLISH (store, commit)"].append(
            epoch_ms(publish[0]["start_time"]) - epoch_ms(run_span["start_time"])
        )
        steps["task: whole run"].append(
            epoch_ms(run_span["end_time"]) - epoch_ms(run_span["start_time"])
        )
        steps["_publish_end"].append(epoch_ms(publish[0]["end_time"]))
    # Frames and badges in arrival order match the sends in order of their PUBLISH.
    published = sorted(steps.pop("_publish_end", []))
    frames_sorted = sorted(frame_at.values())
    for pub, frame in zip(published, frames_sorted, strict=False):
        steps["PUBLISH end -> WebSocket frame in page"].append(frame - pub)
    for i, frame in enumerate(frames_sorted):
        if i + 1 in badge_at:
            steps["frame -> badge attribute"].append(badge_at[i + 1] - frame)
    order = sorted(due.values())
    for i, at in enumerate(order):
        if i + 1 in badge_at:
            steps["due -> badge (end to end)"].append(badge_at[i + 1] - at)
    for title, at in answered.items():
        steps["due -> 202 seen by the sender"].append(at - due[title])
    print(f"POST -> badge at {rate:g}/s, {count} sends (tracing on):")
    for name, values in steps.items():
        print(stats(name, values))
    network = {}
    for stamp, payload in net["frames"]:
        title = TITLE.search(payload)
        if title and net["offset"] is not None:
            network.setdefault(title[1], (stamp + net["offset"]) * 1000)
    dump = {
        "due": due,
        "answered": answered,
        "frames": frames,
        "counts": counts,
        "origin": origin,
        "network": network,
        "heard": heard,
    }
    (api.parent / "page.json").write_text(json.dumps(dump))
    if slowest:
        analyse(api.parent, slowest)


TITLE = re.compile(r'"title":"(profile \d+)"')


def listen(run: Run, heard: dict[str, float]) -> None:
    import redis

    from clarion.core.pubsub import channel_for

    client = redis.Redis.from_url(run.settings.redis_url)
    sub = client.pubsub()
    sub.subscribe(channel_for(run.settings.redis_url))
    for message in sub.listen():
        at = time.time() * 1000
        if message["type"] == "message":
            for title in TITLE.findall(message["data"].decode()):
                heard.setdefault(title, at)


def page_path(
    browser, run: Run, user: str, loads: int, detail: bool = False, cold: bool = False
) -> None:
    """Reloads (the browser's cache warm), or with ``cold`` first visits: a new context
    (an empty cache) with the session cookie each time."""
    context = browser.new_context()
    context.add_init_script(OBSERVE)
    context.add_init_script(WATCH)
    page = open_signed_in(context, run, user)
    cookies = context.cookies()
    steps: dict[str, list[float]] = defaultdict(list)
    for _ in range(loads):
        if cold:
            if page.context is not context:
                page.context.close()
            else:
                page.close()
            fresh = browser.new_context()
            fresh.add_cookies(cookies)
            fresh.add_init_script(OBSERVE)
            fresh.add_init_script(WATCH)
            page = fresh.new_page()
            page.goto(f"{run.base}/ui/")
        else:
            page.reload()
        page.wait_for_function("() => window.__counts.some(c => c[0] > 0)")
        data = page.evaluate("""() => ({
            nav: performance.getEntriesByType('navigation')[0].toJSON(),
            res: performance.getEntriesByType('resource').map((r) => r.toJSON()),
            ws: window.__ws, fetches: window.__fetches, counts: window.__counts,
            marks: performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]),
        })""")
        nav = data["nav"]
        steps["document: responseEnd"].append(nav["responseEnd"])
        scripts = [r for r in data["res"] if r["name"].endswith(".js")]
        if scripts:
            steps["last module: responseEnd"].append(max(r["responseEnd"] for r in scripts))
            steps["modules fetched"].append(len(scripts))
            if detail:
                for r in data["res"]:
                    key = r["name"].rsplit("/ui/", 1)[-1]
                    steps[f"  {key}: requestStart"].append(r["requestStart"])
                    steps[f"  {key}: responseEnd"].append(r["responseEnd"])
        steps["DOMContentLoaded"].append(nav["domContentLoadedEventEnd"])
        for url, t0, t1 in data["fetches"]:
            key = url.rsplit("/ui/", 1)[-1].split("?")[0]
            steps[f"fetch {key}: start"].append(t0)
            steps[f"fetch {key}: end"].append(t1)
        for name, at in data["marks"]:
            steps[f"mark {name}"].append(at)
        seen = set()
        for kind, at, *_ in data["ws"]:
            if kind not in seen:
                seen.add(kind)
                steps[f"websocket {kind}"].append(at)
        steps["badge shows the count"].append(next(c[2] for c in data["counts"] if c[0] > 0))
    page.context.close()
    if page.context is not context:
        context.close()
    kind = "first visits (empty cache)" if cold else "reloads"
    print(f"page load -> count, {loads} {kind} (ms from navigation start):")
    for name, values in sorted(steps.items(), key=lambda kv: percentile(kv[1], 50)):
        print(stats(name, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--loads", type=int, default=15)
    parser.add_argument("--no-trace", action="store_true", help="the page's side only")
    parser.add_argument("--detail", action="store_true", help="every file's fetch on load")
    parser.add_argument("--skip-post", action="store_true", help="the page load only")
    parser.add_argument("--slowest", type=int, default=8, help="the slowest sends, hop by hop")
    parser.add_argument("--skip-load", action="store_true", help="the POST -> badge path only")
    parser.add_argument("--probe", action="store_true", help="GC, loop lag, hub (_probe.py)")
    parser.add_argument("--analyse", type=Path, help="the slowest sends of a saved run (its dir)")
    args = parser.parse_args()
    if args.analyse:
        analyse(args.analyse, args.slowest)
        return
    env = fresh_run(DATABASE, "WARNING")
    with Processes() as procs, sync_playwright() as pw:
        api, worker = procs.logdir / "api.spans", procs.logdir / "worker.spans"
        if not args.no_trace:
            env_api = {**env, "CLARION_OTEL_FILE": str(api)}
            env_worker = {**env, "CLARION_OTEL_FILE": str(worker)}
        else:
            env_api = env_worker = env
        run = Run.__new__(Run)
        split = _Split(procs, env_api, env_worker)
        split.probe = args.probe
        Run.__init__(run, split, env)
        wait_http(f"{run.base}/readyz", procs)
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        run.fill("profile-load", 5)
        if not args.skip_post:
            post_path(browser, run, args.rate, args.sends, api, worker, args.slowest)
        if not args.skip_load:
            page_path(browser, run, "profile-load", args.loads, args.detail)
            page_path(browser, run, "profile-load", args.loads, args.detail, cold=True)
        browser.close()
        print(f"spans and logs: {procs.logdir}")


class _Split:
    """Processes, with the API's and the worker's own environments (their span files)."""

    def __init__(self, procs: Processes, env_api: dict, env_worker: dict) -> None:
        self.procs, self.env_api, self.env_worker = procs, env_api, env_worker
        self.logdir = procs.logdir
        self.probe = False

    def start(self, name, argv, env):
        if self.probe:  # the same command with the timing probes (bench/_probe.py)
            argv = [
                str(BIN / "python"),
                "-m",
                "bench._probe",
                str(self.logdir / "probe.jsonl"),
                *argv[1:],
            ]
        return self.procs.start(name, argv, self.env_api if name == "api" else self.env_worker)

    def check_alive(self) -> None:
        self.procs.check_alive()


if __name__ == "__main__":
    assert BIN.exists()
    main()
