"""kombu's Redis transport, with a worker that survives a Redis restart.

When the broker connection is lost, Celery's consumer first collects the connection (which
detaches its transport) and then closes it; closing the default channel restores the
messages it holds unacknowledged, which needs a client, which needs the detached
transport's settings: ``AttributeError: 'NoneType' object has no attribute 'hostname'``,
not one of the connection errors Celery ignores there, so the worker stopped with
"Unrecoverable error" whenever Redis went away while it held messages (bench/chaos.py,
docs/benchmarks/chaos.md; celery 5.7 / kombu 5.7).

The same goes for a task that ends after the reconnection: its acknowledgement goes
through the old channel (``'NoneType' object has no attribute 'client'``). Here a channel
whose transport is detached raises a connection error instead, which Celery handles (the
acknowledgement is logged as failed), and its restore at close is skipped: it could not
reach Redis anyway. Those messages stay in the unacked hash, where any worker's
``restore_visible`` puts them back on their queues after the visibility timeout
(clarion.workers.heartbeat), exactly as after a killed worker, and every task is
idempotent: a task that had finished runs again and finds its work done.

Used for every ``redis://`` broker URL (``clarion.workers.app.celery_config``).
"""

from __future__ import annotations

import logging

from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)


def _detached(channel) -> bool:
    """Whether the channel's connection was collected (its transport is gone)."""
    return channel.connection is None or channel.connection.client is None


class QoS(redis.QoS):
    def restore_unacked(self, client=None):
        if client is None and _detached(self.channel):
            log.warning(
                "broker connection lost: %d held message(s) come back after the visibility timeout",
                len(self._delivered),
            )
            return None
        return super().restore_unacked(client)


class Channel(redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous=False):
        if _detached(self):
            raise RedisConnectionError("this channel's broker connection was lost")
        return super()._connparams(asynchronous=asynchronous)


class Transport(redis.Transport):
    """kombu's Redis transport, whose channels close cleanly after a lost connection."""

    Channel = Channel
