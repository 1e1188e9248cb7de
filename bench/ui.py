"""The notification centre in a real Chromium, on PostgreSQL + Redis (bench/README.md).

    .venv/bin/python -m bench.ui                  # ~2 min
    .venv/bin/python -m bench.ui --duration 30    # a longer paced phase

1. POST → badge updated: p50/p99 at --rate sends/s (the badge's data-count attribute, seen
   by a MutationObserver in the page; the same clock on both sides).
2. Page load → bell count shown: navigation start to the badge's count, signed-in reload.
3. Popover open → first 20 rows rendered (the list is fetched on the first open).
4. JS heap after scrolling 1,000 notifications into the popover (after a forced GC).
5. Bytes the bell needs, gzipped, against @novu/js's published ESM bundle (npm pack, this run).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from bench._common import BIN, Processes, clarion, free_port, fresh_run, percentile, wait_http
from clarion.core.auth import ui_login_token
from clarion.settings import Settings

DATABASE = "clarion_bench_ui"
WEB = Path(__file__).resolve().parent.parent / "clarion" / "web"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Records when the bell's count attribute changes, from before the page's own scripts run.
OBSERVE = """
window.__counts = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.attributeName === 'data-count' && r.target.localName === 'clarion-bell') {
      window.__counts.push([Number(r.target.getAttribute('data-count')),
                           performance.timeOrigin + performance.now(), performance.now()]);
    }
  }
}).observe(document, { attributes: true, subtree: true, attributeFilter: ['data-count'] });
"""


def module_graph(entry: Path) -> list[Path]:
    """The files a module imports, transitively (static imports only), entry first."""
    seen, todo = [], [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        text = path.read_text()
        for spec in re.findall(r"""(?:from|import)\s*\(?\s*['"](\.[^'"]+)['"]""", text):
            todo.append((path.parent / spec).resolve())
    return seen


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


def novu_bundles() -> list[tuple[str, int, int]]:
    """@novu/js's ESM entries from the registry (npm pack into a temp dir, not kept): the
    main one (its headless client) and ./ui (its Inbox), each with the chunks it imports
    from the package. Its npm dependencies (solid-js, socket.io-client, ...) are not
    counted, which favours it."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(
            ["npm", "pack", "@novu/js", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        with tarfile.open(Path(tmp) / packed.stdout.strip().splitlines()[-1]) as tar:
            tar.extractall(tmp, filter="data")
        pkg = Path(tmp) / "package"
        meta = json.loads((pkg / "package.json").read_text())
        for key in (".", "./ui"):
            entry = meta["exports"][key]["import"]["default"]
            files = module_graph((pkg / entry).resolve())
            data = b"".join(f.read_bytes() for f in files)
            label = f"{meta['name']}@{meta['version']} {key} ({entry} + {len(files) - 1} chunks)"
            out.append((label, len(data), sum(gz(f.read_bytes()) for f in files)))
    return out


class Run:
    def __init__(self, procs: Processes, env: dict[str, str]) -> None:
        self.settings = Settings()
        self.key = clarion("keys", "create", "bench-ui", "--scope", "notify", env=env).split()[-1]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        procs.start("worker", [str(BIN / "clarion"), "worker", "--concurrency", "2"], env)
        procs.start("api", [str(BIN / "clarion"), "api", "--port", str(self.port)], env)
        wait_http(f"{self.base}/readyz", procs)
        self.http = httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=10)

    def send(self, user: str, title: str, headers: dict[str, str] | None = None) -> None:
        body = {"recipients": [user], "category": f"c{hash(title) % 5}", "title": title}
        answer = self.http.post(f"{self.base}/v1/notifications", json=body, headers=headers)
        answer.raise_for_status()

    def fill(self, user: str, n: int) -> None:
        for i in range(n):
            self.send(user, f"notification {i} with a line of body-like text")
        token = self.user_token(user)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            count = httpx.get(
                f"{self.base}/v1/me/notifications/unread-count",
                headers={"Authorization": f"Bearer {token}"},
            ).json()["total"]
            if count >= n:
                return
            time.sleep(0.2)
        raise RuntimeError(f"only {count} of {n} stored")

    def user_token(self, user: str) -> str:
        from clarion.core.auth import issue_user_token

        return issue_user_token(self.settings, user)

    def link(self, user: str) -> str:
        return f"{self.base}/ui/#login={ui_login_token(self.settings, user)}"


def open_signed_in(context, run: Run, user: str):
    page = context.new_page()
    page.goto(run.link(user))
    page.wait_for_function(
        "() => document.querySelector('clarion-bell')?.client?.status === 'live'"
    )
    return page


def post_to_badge(browser, run: Run, rate: float, duration: float) -> list[float]:
    context = browser.new_context()
    context.add_init_script(OBSERVE)
    page = open_signed_in(context, run, "bench-live")
    time.sleep(1)
    sent: list[float] = []
    n = int(rate * duration)
    start = time.time()
    for i in range(n):
        due = start + i / rate
        time.sleep(max(0.0, due - time.time()))
        sent.append(max(due, time.time()) * 1000)  # late sends count from when they were due
        threading.Thread(target=run.send, args=("bench-live", f"live {i}")).start()
    page.wait_for_function(f"() => window.__counts.some(c => c[0] >= {n})", timeout=30_000)
    seen: dict[int, float] = {}
    for count, at, _ in page.evaluate("() => window.__counts"):
        seen.setdefault(int(count), at)
    context.close()
    # The badge shows the i-th notification when the count first reaches i.
    return [seen[i + 1] - sent[i] for i in range(n) if i + 1 in seen]


def page_loads(browser, run: Run, user: str, times: int) -> list[float]:
    context = browser.new_context()
    context.add_init_script(OBSERVE)
    page = open_signed_in(context, run, user)
    out = []
    for _ in range(times):
        page.reload()
        page.wait_for_function("() => window.__counts.some(c => c[0] > 0)")
        out.append(next(c[2] for c in page.evaluate("() => window.__counts") if c[0] > 0))
    context.close()
    return out


def popover_opens(browser, run: Run, user: str, times: int) -> list[float]:
    context = browser.new_context()
    page = open_signed_in(context, run, user)
    out = []
    for _ in range(times):
        page.reload()
        page.wait_for_function(
            "() => document.querySelector('clarion-bell')?.client?.status === 'live'"
        )
        out.append(
            page.evaluate("""() => new Promise((resolve) => {
                const bell = document.querySelector('clarion-bell');
                const t0 = performance.now();
                bell.show(false);
                const feed = bell.feedEl;
                const done = () => feed.shadowRoot.querySelectorAll('[part~=item]').length >= 20
                    ? requestAnimationFrame(() => resolve(performance.now() - t0)) : null;
                feed.addEventListener('clarion:rendered', done);
            })""")
        )
    context.close()
    return out


def heap_after_scrolling(browser, run: Run, user: str, total: int) -> tuple[int, float]:
    context = browser.new_context()
    page = open_signed_in(context, run, user)
    page.evaluate("() => document.querySelector('clarion-bell').show(false)")
    rows = "() => document.querySelector('clarion-bell').feedEl.items.length"
    page.wait_for_function(f"{rows} > 0")
    while page.evaluate(rows) < total:
        before = page.evaluate(rows)
        page.evaluate(
            "() => { const s = document.querySelector('clarion-bell').feedEl.shadowRoot"
            ".querySelector('.scroller'); s.scrollTop = s.scrollHeight; }"
        )
        page.wait_for_function(f"{rows} > {before}", timeout=10_000)
    cdp = context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    used = cdp.send("Runtime.getHeapUsage")["usedSize"]
    shown = page.evaluate(rows)
    context.close()
    return shown, used / 1024 / 1024


def summary(name: str, values: list[float], target: str) -> str:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    worst = max(values)
    return f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms ({target})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--loads", type=int, default=15)
    parser.add_argument("--scroll", type=int, default=1000)
    args = parser.parse_args()

    graph = module_graph(WEB / "elements" / "bell.js") + [WEB / "i18n" / "en.json"]
    raw = b"".join(p.read_bytes() for p in graph)
    ours = sum(gz(p.read_bytes()) for p in graph)
    print(
        f"bell: {len(graph)} files, {len(raw):,} bytes, {ours:,} gzipped one by one "
        f"({gz(raw):,} as one stream)"
    )
    for label, size, zipped in novu_bundles():
        print(f"{label}: {size:,} bytes, {zipped:,} gzipped; bell/it = {ours / zipped:.3f} x")
    print("(target: <= 0.25 x)")

    env = fresh_run(DATABASE, "WARNING")
    with Processes() as procs, sync_playwright() as pw:
        run = Run(procs, env)
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        run.fill("bench-load", 5)
        run.fill("bench-feed", args.scroll)
        latencies = post_to_badge(browser, run, args.rate, args.duration)
        print(summary(f"POST -> badge at {args.rate:g}/s", latencies, "target p99 <= 100 ms"))
        print(
            summary(
                "page load -> count",
                page_loads(browser, run, "bench-load", args.loads),
                "target <= 150 ms",
            )
        )
        print(
            summary(
                "popover open -> 20 rows",
                popover_opens(browser, run, "bench-feed", args.loads),
                "target <= 50 ms",
            )
        )
        shown, heap = heap_after_scrolling(browser, run, "bench-feed", args.scroll)
        print(f"JS heap after scrolling {shown} notifications: {heap:.1f} MiB (target <= 30 MB)")
        browser.close()


if __name__ == "__main__":
    main()
