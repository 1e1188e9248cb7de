"""The accepted-message ledger: what a broker may lose between accepting and storing.

After ``create`` commits, the database is the truth and the sweeper guards every open
delivery. Before that, an accepted request exists only as a broker message, and kombu's
Redis transport has a window where a message can vanish: it pops the message with BRPOP
and only then records it as unacked, in a second command. A worker killed between the two
loses the message, and with it notifications the API already answered 202 for.

So the producer side records each ``create``/``fanout`` message here (by Celery task id)
before publishing it, the task settles its entry once it has committed, and the sweeper
re-publishes, under the same task id, entries older than ``ledger_resend_seconds``. The
tasks are idempotent (create skips ids it stored; a fan-out derives its ids), so a
re-publish of a message that was merely slow costs a no-op task, never a second
notification. An entry re-published ``ledger_max_resends`` times is dropped with an error
log: its task keeps failing, which the dead task's own logs explain.

Backends are chosen by the broker URL's scheme. Only Redis brokers have the window, so
other brokers (AMQP, the embedded SQL transport) get the no-op ledger.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# The hash holds each message; the sorted set orders task ids by when they were (re)sent.
MESSAGES, SENT_AT = "clarion:ledger:messages", "clarion:ledger:sent_at"
# kombu's Redis transport: delivered, unacknowledged messages by delivery tag.
UNACKED = "unacked"


@dataclass(frozen=True)
class Entry:
    """One recorded Celery message: enough to publish it again."""

    task_id: str
    task: str
    args: list[Any]
    queue: str
    resends: int = 0

    def dumps(self) -> str:
        return json.dumps(
            {"task": self.task, "args": self.args, "queue": self.queue, "resends": self.resends},
            separators=(",", ":"),
            default=str,
        )


class Ledger(Protocol):
    def record(self, entry: Entry) -> None: ...

    def settle(self, task_id: str) -> None: ...

    def overdue(self, older_than: float, limit: int) -> list[Entry]: ...

    def lost(self, older_than: float, limit: int, queues: Iterable[str] = ()) -> list[Entry]: ...


class NullLedger:
    """For brokers that do not lose a message between delivering and tracking it."""

    def record(self, entry: Entry) -> None:
        pass

    def settle(self, task_id: str) -> None:
        pass

    def overdue(self, older_than: float, limit: int) -> list[Entry]:
        return []

    def lost(self, older_than: float, limit: int, queues: Iterable[str] = ()) -> list[Entry]:
        return []


class RedisLedger:
    """A hash of messages and a sorted set of send times, in the broker's own database."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis

        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def record(self, entry: Entry) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(MESSAGES, entry.task_id, entry.dumps())
        pipe.zadd(SENT_AT, {entry.task_id: time.time()})
        pipe.execute()

    def settle(self, task_id: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(MESSAGES, task_id)
        pipe.zrem(SENT_AT, task_id)
        pipe.execute()

    def overdue(self, older_than: float, limit: int) -> list[Entry]:
        return [entry for entry, _ in self._sent_before(time.time() - older_than, limit)]

    def _sent_before(self, until: float, limit: int) -> list[tuple[Entry, float]]:
        """Entries (re)sent before ``until`` (exclusive), oldest first, with that time."""
        scored = self._client.zrangebyscore(SENT_AT, "-inf", f"({until}", 0, limit, withscores=True)
        if not scored:
            return []
        ids = [task_id for task_id, _ in scored]
        entries = []
        for (task_id, sent_at), raw in zip(scored, self._client.hmget(MESSAGES, ids), strict=True):
            if raw is None:  # settled between the two reads
                continue
            entries.append((Entry(task_id=task_id.decode(), **json.loads(raw)), sent_at))
        return entries

    def _oldest_waiting(self, queue: str) -> float | None:
        """The ledger time of the message at the consuming end of ``queue``: inf when the
        queue is empty, None when that message has no entry (it proves nothing)."""
        raw = self._client.lindex(queue, -1)
        if raw is None:
            return float("inf")
        try:
            task_id = json.loads(raw)["headers"]["id"]
        except (ValueError, KeyError, TypeError):
            return None
        return self._client.zscore(SENT_AT, task_id)

    def lost(self, older_than: float, limit: int, queues: Iterable[str] = ()) -> list[Entry]:
        """Entries older than ``older_than`` that are neither waiting in their queue (one of
        ``queues``) nor held by a worker (kombu's ``unacked`` hash, which live workers keep
        fresh): lost between kombu's ``BRPOP`` and its unacked record, by a worker killed
        there.

        A queue is consumed oldest first, so an entry sent before the message at the
        consuming end of its queue is no longer in it. Only entries older than that are
        read at all, so a long backlog costs one ``LINDEX`` per queue and re-sends
        nothing. A message consumed and settled between these reads is sent again and
        runs as a no-op task."""
        oldest = {queue: self._oldest_waiting(queue) for queue in queues}
        known = [t for t in oldest.values() if t is not None]
        if not known:
            return []
        until = min(time.time() - older_than, max(known))
        gone = [
            entry
            for entry, sent_at in self._sent_before(until, limit)
            if (tail := oldest.get(entry.queue)) is not None and sent_at < tail
        ]
        if not gone:
            return []
        held = b"\n".join(self._client.hvals(UNACKED))
        return [entry for entry in gone if entry.task_id.encode() not in held]


BACKENDS: dict[str, Callable[[str, float], Ledger]] = {
    "redis": RedisLedger,
    "rediss": RedisLedger,
}
_LEDGERS: dict[tuple[str, float], Ledger] = {}


def for_broker(broker_url: str, timeout: float = 3.0) -> Ledger:
    """The ledger of a broker URL (the first of a failover list), one per URL per process;
    ``timeout`` bounds each Redis call, as the broker's own publish timeout does."""
    url = broker_url.split(";")[0].strip()
    if (url, timeout) not in _LEDGERS:
        backend = BACKENDS.get(urlsplit(url).scheme)
        _LEDGERS[url, timeout] = backend(url, timeout) if backend else NullLedger()
    return _LEDGERS[url, timeout]


def for_app(celery_app: Any) -> Ledger:
    """The ledger of a Celery app's broker (Clarion's own, or a producer's)."""
    conf = celery_app.conf
    return for_broker(str(conf.broker_url or ""), float(conf.broker_connection_timeout or 3.0))


def publish(celery_app: Any, ledger: Ledger, entry: Entry, **options: Any) -> None:
    """Record, then publish under the entry's task id; a failed publish leaves no entry,
    so a request answered with an error is not published later by the sweeper."""
    ledger.record(entry)
    try:
        celery_app.send_task(
            entry.task, args=entry.args, queue=entry.queue, task_id=entry.task_id, **options
        )
    except BaseException:
        try:
            ledger.settle(entry.task_id)
        except Exception:  # noqa: BLE001 - the broker is down; the publish error matters more
            log.warning("could not clear ledger entry %s", entry.task_id, exc_info=True)
        raise


def resend_overdue(
    celery_app: Any, ledger: Ledger, *, older_than: float, max_resends: int, limit: int
) -> dict[str, int]:
    """Publish again what was recorded ``older_than`` seconds ago and is still unsettled."""
    return _resend(celery_app, ledger, ledger.overdue(older_than, limit), max_resends)


def resend_lost(
    celery_app: Any,
    ledger: Ledger,
    *,
    older_than: float,
    max_resends: int,
    limit: int,
    queues: Iterable[str],
) -> dict[str, int]:
    """Publish again what was recorded ``older_than`` seconds ago and is nowhere in the
    broker any more (``Ledger.lost``; ``queues``: those the ledger's messages go to)."""
    return _resend(celery_app, ledger, ledger.lost(older_than, limit, queues), max_resends)


def _resend(
    celery_app: Any, ledger: Ledger, entries: list[Entry], max_resends: int
) -> dict[str, int]:
    counts = {"resent": 0, "dropped": 0}
    for entry in entries:
        if entry.resends >= max_resends:
            log.error(
                "task %s (%s) was re-sent %d times and never settled; dropping it from the ledger",
                entry.task_id,
                entry.task,
                entry.resends,
            )
            ledger.settle(entry.task_id)
            counts["dropped"] += 1
            continue
        again = Entry(entry.task_id, entry.task, entry.args, entry.queue, entry.resends + 1)
        ledger.record(again)  # the new count, and the clock restarts
        celery_app.send_task(again.task, args=again.args, queue=again.queue, task_id=again.task_id)
        counts["resent"] += 1
    if counts["resent"] or counts["dropped"]:
        log.warning("ledger: re-sent %(resent)d unsettled messages, dropped %(dropped)d", counts)
    return counts
