"""What the rate limits cost on the send path: one check of each kind against Redis.

Run from the repository root (Redis on 127.0.0.1, or CLARION_BENCH_REDIS)::

    .venv/bin/python -m bench.ratelimits            # 5000 checks of each kind

A send with an API key makes two checks, each one round trip (one Lua script): the key's
request rate (moving window) and its daily quota of recipients (sliding window counter,
charged the request's recipient count). Figures: microseconds per check, p50 and p99,
and the checks per second one thread makes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis

from bench._common import PUBSUB_DB, REDIS
from clarion.core.ratelimits import MOVING, SLIDING, Limits


def report(name: str, took: list[float]) -> None:
    took = sorted(took)
    p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
    rate = len(took) / sum(took)
    print(
        f"{name}: p50 {p50 * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs, "
        f"mean {statistics.fmean(took) * 1e6:.0f} µs ({rate:,.0f} checks/s, one thread)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="checks of each kind")
    args = parser.parse_args()
    url = f"{REDIS}/{PUBSUB_DB}"
    redis.Redis.from_url(url).flushdb()
    limits = Limits(url)
    ping = redis.Redis.from_url(url)
    took = []
    for _ in range(args.n):
        start = time.perf_counter()
        ping.ping()
        took.append(time.perf_counter() - start)
    report("redis PING (the floor: one round trip)", took)
    for name, limit, strategy in (
        ("api-key rate (moving window, 1000000/minute)", "1000000/minute", MOVING),
        ("daily quota (sliding window counter)", "1000000000/day", SLIDING),
    ):
        took = []
        for _ in range(args.n):
            start = time.perf_counter()
            assert limits.hit(limit, "bench", "1", strategy=strategy) is None
            took.append(time.perf_counter() - start)
        report(name, took)
    redis.Redis.from_url(url).flushdb()


if __name__ == "__main__":
    main()
