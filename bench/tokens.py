"""CPU per token check and per request id, the per-connect work of a reconnect storm that is
Clarion's own (docs/benchmarks/stream.md).

    .venv/bin/python -m bench.tokens                 # ~20 s, no services needed

Distinct user tokens (one per subscriber, as in a storm: a process just restarted has
seen none of them), signed with the current key and with a previous key still valid, each
verified once per round with ``verify_user_claims``; and request ids made for WebSocket
scopes without ``X-Request-ID``. Figures are process CPU (``time.process_time``) per
operation, the median and range over ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bench._common import warn_if_busy
from clarion.api import requestid
from clarion.core.auth import issue_user_token, verify_user_claims
from clarion.settings import Settings

CURRENT, PREVIOUS = "c" * 48, "p" * 48


def per_op_us(work: Callable[[], int], rounds: int) -> list[float]:
    figures = []
    for _ in range(rounds):
        start = time.process_time()
        ops = work()
        figures.append((time.process_time() - start) / ops * 1e6)
    return figures


def report(name: str, figures: list[float]) -> None:
    print(
        f"{name:44s} {statistics.median(figures):7.2f} µs "
        f"(range {min(figures):.2f}-{max(figures):.2f}, {len(figures)} rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    settings = Settings(
        secret_key=CURRENT, previous_secret_keys=[{"key": PREVIOUS, "until": until}]
    )
    before = Settings(secret_key=PREVIOUS)
    current = [issue_user_token(settings, f"subscriber-{i}") for i in range(args.tokens)]
    previous = [issue_user_token(before, f"subscriber-{i}") for i in range(args.tokens)]
    scope = {"type": "websocket", "headers": [(b"host", b"localhost"), (b"origin", b"x")]}

    def verify(tokens: list[str]) -> Callable[[], int]:
        def work() -> int:
            for token in tokens:
                verify_user_claims(settings, token)
            return len(tokens)

        return work

    def request_ids() -> int:
        for _ in range(args.tokens):
            requestid.of_scope(scope)
        return args.tokens

    warn_if_busy()
    verify(current[:500])()  # warm up
    report("verify_user_claims, current key", per_op_us(verify(current), args.rounds))
    report("verify_user_claims, previous key (rotation)", per_op_us(verify(previous), args.rounds))
    report("requestid.of_scope, no header (uuid4)", per_op_us(request_ids, args.rounds))


if __name__ == "__main__":
    main()
