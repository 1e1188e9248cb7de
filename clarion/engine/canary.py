"""The queue canary: a no-op task that measures how long a message waits in a queue.

The ``queue_delay`` rule (system pack) calls :func:`probe` for each queue it watches:

1. If no canary is in flight for the queue, it stores ``<token> <sent_at>`` under
   ``clarion:canary:<queue>:pending`` (SET NX) and sends the ``clarion.engine.canary``
   task to that queue with the same token and send time. At most one canary per queue is
   ever in flight, so a stuck queue does not fill up with canaries.
2. A worker consuming the queue runs the task (``clarion.workers.tasks.canary_task``,
   which calls :func:`observe`): it stores the wait it observed (its clock minus
   ``sent_at``) under ``clarion:canary:<queue>:last`` and clears ``pending`` if it still
   holds this canary's token.
3. The rule reads both keys: a canary still pending for longer than the threshold, or a
   last observed wait above it, means messages wait too long in that queue.

The state lives in the broker's own Redis (the canary measures that very broker), through
the broker connection, so it needs no other setting. Other brokers (the embedded SQLite
one) have no such store: :func:`redis_of` returns None and the rule stays silent.
The wait is measured across two clocks (the rule's host and the worker's), so hosts must
agree on the time (NTP) to well below the threshold.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from celery import Celery

TASK = "clarion.engine.canary"
PREFIX = "clarion:canary:"
# A canary lost with the broker's data (a flushed Redis, a purged queue) would otherwise
# count as "never consumed" forever; after a day the next run sends a fresh one.
PENDING_TTL_SECONDS = 24 * 3600
# A wait observed long ago says nothing about the queue now (say, the rule was off).
LAST_TTL_SECONDS = 3600

# Compare-and-delete: clear "pending" only if it still holds this canary, not a newer one
# sent after this one's key expired.
_CLEAR_PENDING = """
local v = redis.call('get', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Reading:
    """What is known about one queue's canary: the one in flight and the last one seen."""

    queue: str
    # Send time (epoch seconds) of the canary no worker has run yet.
    pending_since: float | None
    # Seconds the last consumed canary waited, and when a worker ran it.
    last_delay: float | None
    last_observed_at: float | None


def redis_of(conn):
    """The Redis client behind a kombu broker connection, or None for other transports."""
    if conn.transport.driver_type != "redis":
        return None
    return conn.default_channel.client


def _keys(queue: str) -> tuple[str, str]:
    return f"{PREFIX}{queue}:pending", f"{PREFIX}{queue}:last"


def read(client, queue: str) -> Reading:
    pending_key, last_key = _keys(queue)
    pending, last = client.mget(pending_key, last_key)
    since = float(pending.split()[1]) if pending else None
    delay, observed = map(float, last.split()) if last else (None, None)
    return Reading(queue, since, delay, observed)


def probe(app: Celery, client, queue: str, now: datetime) -> bool:
    """Send a canary to ``queue`` unless one is in flight; True when one was sent."""
    pending_key, _ = _keys(queue)
    token, sent_at = uuid.uuid4().hex, now.timestamp()
    if not client.set(pending_key, f"{token} {sent_at!r}", nx=True, ex=PENDING_TTL_SECONDS):
        return False
    try:
        app.send_task(TASK, args=[queue, sent_at, token], queue=queue)
    except Exception:
        # Not sent: do not leave a canary "in flight" that no worker can ever clear.
        client.eval(_CLEAR_PENDING, 1, pending_key, token)
        raise
    return True


def observe(client, queue: str, sent_at: float, token: str, now: float | None = None) -> float:
    """Record that a worker ran the canary sent at ``sent_at``; returns the wait."""
    pending_key, last_key = _keys(queue)
    observed = time.time() if now is None else now
    delay = max(0.0, observed - sent_at)  # a clock behind the sender's reads as no wait
    client.set(last_key, f"{delay!r} {observed!r}", ex=LAST_TTL_SECONDS)
    client.eval(_CLEAR_PENDING, 1, pending_key, token)
    return delay
