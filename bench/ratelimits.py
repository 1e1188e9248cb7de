"""What the rate limits cost on the send path, against Redis.

Run from the repository root (Redis on 127.0.0.1, or CLARION_BENCH_REDIS)::

    .venv/bin/python -m bench.ratelimits            # 3 rounds of 3000 of each kind

A send with an API key passes two limits: the key's request rate (moving window) and its
daily quota of recipients (sliding window counter, charged the request's recipient
count). They are checked together, in one script and one round trip
(clarion.core.ratelimit_script). The A/B, interleaved round by round so that both sides
see the same load on the machine:

- ``two scripts``: the ``limits`` library's own calls, one per limit (what a send cost
  before: two round trips);
- ``one script``: both limits in one call of :meth:`Limits.hit_all`.

Figures per send: wall p50 / p99 (µs), this process's CPU (µs), Redis's CPU (µs, from
``INFO cpu``) and the commands Redis ran (``INFO commandstats``: round trips).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import redis

from bench._common import PUBSUB_DB, REDIS
from clarion.core.ratelimits import MOVING, SLIDING, Check, Limits, item

RATE, QUOTA = "1000000/minute", "1000000000/day"


def redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def redis_calls(client: redis.Redis) -> int:
    return sum(v["calls"] for v in client.info("commandstats").values())


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, n: int, one, client: redis.Redis) -> dict:
    took = []
    calls, server, mine = redis_calls(client), redis_cpu(client), process_cpu()
    for _ in range(n):
        start = time.perf_counter()
        one()
        took.append(time.perf_counter() - start)
    mine, server = process_cpu() - mine, redis_cpu(client) - server
    calls = redis_calls(client) - calls - 2  # the two INFO calls of this measurement
    took.sort()
    return {
        "name": name,
        "p50": took[n // 2] * 1e6,
        "p99": took[int(n * 0.99)] * 1e6,
        "cpu": mine / n * 1e6,
        "redis_cpu": server / n * 1e6,
        "commands": calls / n,
    }


def show(row: dict) -> None:
    print(
        f"  {row['name']:<28} p50 {row['p50']:6.0f} µs  p99 {row['p99']:7.0f} µs  "
        f"client CPU {row['cpu']:5.0f} µs  Redis CPU {row['redis_cpu']:4.0f} µs  "
        f"commands {row['commands']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="sends per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = f"{REDIS}/{PUBSUB_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    limits = Limits(url)
    moving, sliding = limits._strategies[MOVING], limits._strategies[SLIDING]
    rate, quota = Check(RATE, "api-key", ("1",)), Check(QUOTA, "daily-quota", ("1",), 1, SLIDING)

    def two_scripts() -> None:
        assert moving.hit(item(RATE), "api-key", "2")
        assert sliding.hit(item(QUOTA), "daily-quota", "2", cost=1)

    def one_script() -> None:
        refusal, _ = limits.hit_all(rate, quota)
        assert refusal is None

    sides = {"two scripts (before)": two_scripts, "one script (after)": one_script}
    for one in sides.values():  # warm up: scripts loaded, connections open
        for _ in range(200):
            one()
    rows: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(args.rounds):
        print(f"round {r + 1}")
        for name, one in sides.items():
            rows[name].append(measure(name, args.n, one, client))
            show(rows[name][-1])
    print("median of the rounds")
    for name, measured in rows.items():
        show(
            {"name": name}
            | {k: statistics.median(m[k] for m in measured) for k in measured[0] if k != "name"}
        )
    client.flushdb()


if __name__ == "__main__":
    main()
