"""What a live connection starts with, for a batch of connections arriving together.

After a restart the whole herd of clients comes back within a second or two. Each
connection needs its connect counted against ``CLARION_STREAM_CONNECT_RATE_LIMIT`` and its
start read (head, unread counts, replay after its cursor); :class:`clarion.api.batch.Batcher`
collects them, and one thread does both for a batch: one hop to the thread pool per batch,
one round trip to Redis for the counts, one statement per question for the reads
(docs/benchmarks/stream.md, "Reconnect storm").
"""

from __future__ import annotations

from clarion.api.ratelimit import STREAM_CONNECT
from clarion.core import replay
from clarion.core.ratelimits import Check, LimitsUnavailable, Refusal
from clarion.runtime import Runtime

# What a connection asks the start batch: its recipient, cursor, and the connect rate limit
# to count it against first (None: counted already, or not at all).
Ask = tuple[str, int | None, str | None]


def starts(runtime: Runtime, asks: list[Ask]) -> list[replay.Start | Refusal | Exception]:
    """The starts of a batch of connections: the connects counted first (one round trip
    for the batch), then the reads of those not refused, in one session with one
    statement per question. An error is the answer of the asks it failed."""
    results: list[replay.Start | Refusal | Exception | None] = [None] * len(asks)
    counted = [i for i, ask in enumerate(asks) if ask[2] is not None]
    if counted:
        checks = [Check(lim, STREAM_CONNECT, (rid,)) for rid, _, lim in asks if lim is not None]
        try:
            refusals: list[Refusal | None | Exception] = list(runtime.limits.hit_each(checks))
        except LimitsUnavailable as exc:
            refusals = [exc] * len(counted)
        for i, refusal in zip(counted, refusals, strict=True):
            results[i] = refusal
    reads = [(rid, since) for (rid, since, _), r in zip(asks, results, strict=True) if r is None]
    found: dict[tuple[str, int | None], replay.Start | Exception] = {}
    if reads:
        try:
            with runtime.sessions() as session:
                found.update(
                    replay.starts(
                        session=session, asks=reads, limit=runtime.settings.stream_max_replay
                    )
                )
        except Exception as exc:  # noqa: BLE001 - each connection read closes with 1011
            found = dict.fromkeys(reads, exc)
    return [
        found[rid, since] if r is None else r
        for (rid, since, _), r in zip(asks, results, strict=True)
    ]
