"""Queue depth and the oldest message's age, read from the broker when Prometheus scrapes.

On Redis a queue is a list per priority step (kombu pushes on the left and workers pop
on the right), so a scrape costs one pipelined LLEN of every list, then one pipelined
LINDEX -1 of the non-empty ones: the tail is the oldest message, and its publish time is
the ``clarion_sent_at`` header every Clarion process stamps on what it publishes
(:func:`stamp`). Messages a worker has prefetched or is running are no longer in the list:
``clarion_broker_unacked_messages`` counts those. Other brokers (the embedded SQLite one)
report depth through kombu and no age.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from celery.signals import before_task_publish
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from clarion.core import queues

log = logging.getLogger(__name__)
HEADER = "clarion_sent_at"
UNACKED = "unacked"  # kombu's Redis hash of delivered, unacknowledged messages


def _stamp(headers: dict | None = None, **_: object) -> None:
    if headers is not None:
        headers.setdefault(HEADER, time.time())


def stamp() -> None:
    """Stamp the publish time on every task message this process sends (once per process)."""
    before_task_publish.connect(_stamp, weak=False, dispatch_uid="clarion-sent-at")


def _sent_at(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        value = json.loads(raw).get("headers", {}).get(HEADER)
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


class QueueCollector(Collector):
    """``clarion_queue_messages``, ``clarion_queue_oldest_message_age_seconds`` and
    ``clarion_broker_unacked_messages`` from the broker of ``app``; ``clarion_broker_up``
    says whether the broker answered this scrape."""

    def __init__(self, app, names: tuple[str, ...] = queues.ALL_QUEUES) -> None:
        self.app, self.names = app, names

    def describe(self) -> list:
        return []  # read at scrape time only, never at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("clarion_broker_up", "1 when the broker answered this scrape.")
        try:
            depth, age, unacked = self._read()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; the gauge says why
            log.warning("queue metrics: broker unreachable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        messages = GaugeMetricFamily(
            "clarion_queue_messages",
            "Messages waiting in a queue (not yet taken).",
            labels=["queue"],
        )
        for queue, n in depth.items():
            messages.add_metric([queue], n)
        yield messages
        oldest = GaugeMetricFamily(
            "clarion_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in a queue (0 when empty).",
            labels=["queue"],
        )
        for queue, seconds in age.items():
            oldest.add_metric([queue], seconds)
        yield oldest
        if unacked is not None:
            yield GaugeMetricFamily(
                "clarion_broker_unacked_messages",
                "Messages delivered to workers and not yet acknowledged (running or prefetched).",
                value=unacked,
            )

    def _read(self) -> tuple[dict[str, int], dict[str, float], int | None]:
        with self.app.pool.acquire(block=True, timeout=5) as conn:
            channel = conn.default_channel
            if conn.transport.driver_type != "redis":
                return {q: channel._size(q) for q in self.names}, {}, None
            return self._read_redis(channel)

    def _read_redis(self, channel) -> tuple[dict[str, int], dict[str, float], int | None]:
        lists = [(q, channel._q_for_pri(q, p)) for q in self.names for p in channel.priority_steps]
        client = channel.client
        with client.pipeline(transaction=False) as pipe:
            for _, name in lists:
                pipe.llen(name)
            pipe.hlen(UNACKED)
            *sizes, unacked = pipe.execute()
        depth = dict.fromkeys(self.names, 0)
        busy = []
        for (queue, name), size in zip(lists, sizes, strict=True):
            depth[queue] += size
            if size:
                busy.append((queue, name))
        known: dict[str, float] = {}
        if busy:
            with client.pipeline(transaction=False) as pipe:
                for _, name in busy:
                    pipe.lindex(name, -1)
                tails = pipe.execute()
            now = time.time()
            for (queue, _), raw in zip(busy, tails, strict=True):
                sent_at = _sent_at(raw)
                if sent_at is not None:
                    known[queue] = max(known.get(queue, 0.0), now - sent_at)
        # A non-empty queue whose tail carries no stamp (published by a producer's own
        # Celery app) has no known age: no sample rather than a wrong one.
        unknown = {q for q, _ in busy} - set(known)
        age = {q: known.get(q, 0.0) for q in self.names if q not in unknown}
        return depth, age, unacked
