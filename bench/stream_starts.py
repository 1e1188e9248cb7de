"""CPU of a live connection's start reads: one connection at a time vs batched.

    .venv/bin/python -m bench.stream_starts          # ~20 s

``--recipients`` (1,000) subscribers with two notifications each; every connection
resumes after cursor 1 (one notification to replay). "One at a time" is what each
connection did before batching (api/stream.py at f7fdc3a): the head and the
unread count in one session, the replay in another. "Batched" is
``clarion.core.replay.starts`` for ``--batch`` (100) connections per session, as
``clarion.api.batch.Batcher`` runs it. Printed: this process's CPU (``time.process_time``,
robust to other load on the machine) and wall time per connection, ``--rounds`` (3) times.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as common
from clarion.core import enqueue, inbox, replay
from clarion.core.create import create_notifications
from clarion.core.schemas import NotificationCreate
from clarion.runtime import Runtime
from clarion.settings import Settings

DATABASE = "clarion_bench_stream_starts"


class _Nowhere:
    def publish_many(self, events) -> None:
        pass

    def deliver(self, channel, delivery_ids, *, lane) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    common.fresh_run(DATABASE, "WARNING")
    runtime = Runtime(Settings())
    settings, limit = runtime.settings, runtime.settings.stream_max_replay
    ids = [f"m-{i}" for i in range(args.recipients)]
    for k in range(2):
        for j in range(0, len(ids), 250):
            request = NotificationCreate(recipients=ids[j : j + 250], category="c", title=f"{k}")
            create_notifications(
                [enqueue.prepare(request)], sessions=runtime.sessions, settings=settings,
                publisher=_Nowhere(), dispatcher=_Nowhere(), channels=runtime.channels,
            )  # fmt: skip

    def one(rid: str) -> None:
        with runtime.sessions() as session:
            head = replay.current_cursor(session=session, recipient_id=rid)
            inbox.unread_event(session=session, recipient_id=rid, cursor=head)
        with runtime.sessions() as session:
            replay.replay(session=session, recipient_id=rid, since=1, limit=limit)

    def batched() -> None:
        for j in range(0, len(ids), args.batch):
            with runtime.sessions() as session:
                asks = [(rid, 1) for rid in ids[j : j + args.batch]]
                replay.starts(session=session, asks=asks, limit=limit)

    n = len(ids)
    for k in range(args.rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        for rid in ids:
            one(rid)
        a_cpu, a_wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu, wall = time.process_time(), time.perf_counter()
        batched()
        b_cpu, b_wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"round {k + 1}: one at a time {a_cpu / n * 1e6:,.0f} us CPU per connection"
            f" ({a_wall / n * 1e6:,.0f} us wall); batches of {args.batch}:"
            f" {b_cpu / n * 1e6:,.0f} us CPU ({b_wall / n * 1e6:,.0f} us wall)"
        )
    runtime.close()


if __name__ == "__main__":
    main()
