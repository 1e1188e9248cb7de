"""The API's CPU per POST /v1/notifications, in process: an A/B harness for the send path.

    .venv/bin/python -m bench.send_api               # 3,000 POSTs after 200 warm-up
    .venv/bin/python -m bench.send_api --posts 10000

The ASGI app (``create_app()`` with its real runtime: PostgreSQL, Redis, the broker) is
called directly, ``--in-flight`` requests at a time, with the body bench.pipeline sends (1
recipient). No HTTP parsing and no worker: the create messages stay in the broker (its
Redis database is flushed at the start). Printed: this process's CPU time (every thread:
the event loop, the thread pool, the coalescer) per POST, and the POSTs per second.

CPU per POST moves less with other work on the machine than a rate does, and without the
HTTP server, the worker and PostgreSQL in the run the A/B of an API change is steadier
than bench.pipeline's. It measures what the API does per request (dependencies, thread
hops, validation, the coalescer, the publish), not uvicorn's parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from bench import _common as common

DATABASE = "clarion_bench_send_api"


def body(prefix: str, pool: int) -> bytes:
    return json.dumps(
        {
            "recipients": [f"{prefix}{random.randrange(pool)}"],
            "category": "bench",
            "type": "load",
            "title": "Hello",
            "body": "A benchmark notification.",
        }
    ).encode()


async def post(app, headers: list, payload: bytes) -> int:
    """One POST through the ASGI app; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/notifications",
        "raw_path": b"/v1/notifications",
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": payload, "more_body": False}]
    status = 0

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        return {}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(app, key: str, args: argparse.Namespace) -> tuple[float, float]:
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {key}".encode()),
    ]
    prefix = "bench-send-api-"
    async with app.router.lifespan_context(app):
        for _ in range(args.warmup):
            assert await post(app, headers, body(prefix, args.pool)) == 202
        started = 0

        async def connection() -> None:
            nonlocal started
            while started < args.posts:
                started += 1
                status = await post(app, headers, body(prefix, args.pool))
                assert status == 202, status

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(connection() for _ in range(args.in_flight)))
        return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--pool", type=int, default=10_000, help="recipient ids drawn from")
    args = parser.parse_args()
    env = common.fresh_run(DATABASE, "WARNING")
    key = common.clarion("keys", "create", "bench", "--scope", "notify", env=env).split()[-1]
    import uvloop

    from clarion.api.app import create_app

    app = create_app()
    cpu, wall = uvloop.run(drive(app, key, args))
    print(
        f"{args.posts:,} POSTs, {args.in_flight} in flight: API CPU {cpu / args.posts * 1000:.3f} "
        f"ms per POST (this process, every thread), {args.posts / wall:,.0f} POSTs/s"
    )
    common.flush_redis()


if __name__ == "__main__":
    main()
