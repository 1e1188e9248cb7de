"""What the Prometheus instrumentation costs: per request, per delivery, per scrape.

Run from the repository root (Redis on 127.0.0.1:6379, or --redis)::

    .venv/bin/python -m bench.metrics                  # in-memory registry (one process)
    .venv/bin/python -m bench.metrics --multiprocess   # as workers and `api --workers N` run

1. Request: a no-op ASGI app called directly, bare and wrapped in the API's
   RequestMetrics middleware; the difference per call is the middleware's cost.
2. Delivery: the calls the deliver step makes for one sent delivery (render and send
   timers, delivery_finished with the latency) against the same loop without them.
3. Scrape: rendering the API's /metrics registry, with the queue collector reading
   every queue of the broker (pipelined LLEN, LINDEX of non-empty queues).
Each figure is the median of ``--repeat`` runs of ``--n`` iterations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time


def _median(fn, n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(n)
        runs.append((time.perf_counter() - started) / n)
    return statistics.median(runs)


def bench_request(n: int, repeat: int) -> tuple[float, float]:
    from clarion.api.metrics import RequestMetrics

    class Route:
        path = "/v1/notifications"

    async def app(scope, receive, send):
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        return None

    wrapped = RequestMetrics(app)

    def run(target):
        async def loop(k):
            for _ in range(k):
                await target({"type": "http", "method": "POST", "path": "/x"}, receive, send)

        return lambda k: asyncio.run(loop(k))

    return _median(run(app), n, repeat), _median(run(wrapped), n, repeat)


def bench_delivery(n: int, repeat: int) -> tuple[float, float]:
    from clarion import metrics

    def bare(k):
        for _ in range(k):
            payload = len("render")
            payload += 1  # the send

    def instrumented(k):
        for _ in range(k):
            with metrics.RENDER_DURATION.labels("email").time():
                payload = len("render")
            with metrics.SEND_DURATION.labels("email").time():
                payload += 1
            metrics.delivery_finished("email", "sent", "sent", dead_lettered=False, latency=0.2)

    return _median(bare, n, repeat), _median(instrumented, n, repeat)


def bench_scrape(redis_url: str, repeat: int) -> tuple[float, int]:
    from celery import Celery

    from clarion import exposition
    from clarion.workers.queue_metrics import QueueCollector

    app = Celery("bench", broker=redis_url, set_as_current=False)
    registry = exposition.registry(QueueCollector(app))
    body = exposition.render(registry)
    seconds = _median(lambda k: [exposition.render(registry) for _ in range(k)], 20, repeat)
    return seconds, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--multiprocess", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if args.multiprocess:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    assert "prometheus_client" not in sys.modules
    mode = "multiprocess" if args.multiprocess else "in-memory"
    bare, wrapped = bench_request(args.n, args.repeat)
    print(
        f"[{mode}] request: bare {bare * 1e6:.2f} us, with RequestMetrics {wrapped * 1e6:.2f} us,"
    )
    print(f"  cost {(wrapped - bare) * 1e6:.2f} us per request")
    bare, inst = bench_delivery(args.n, args.repeat)
    print(f"[{mode}] delivery instrumentation: {(inst - bare) * 1e6:.2f} us per delivery")
    seconds, size = bench_scrape(args.redis, args.repeat)
    print(f"[{mode}] scrape of the API registry + queues: {seconds * 1e3:.2f} ms, {size} bytes")


if __name__ == "__main__":
    main()
