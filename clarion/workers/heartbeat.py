"""A worker's heartbeat on the messages it holds, so a dead worker's come back in seconds.

kombu's Redis transport keeps every delivered, unacknowledged message in the ``unacked``
hash, with the time it was delivered in the ``unacked_index`` sorted set; any consuming
worker's ``restore_visible`` puts back on its queue the ones delivered more than
``visibility_timeout`` seconds ago. That timeout used to have to outlast the longest task
and countdown, so it was an hour, and a killed worker's messages waited that long.

Here each live worker moves the index time of the messages it holds (prefetched,
executing, or waiting for their countdown: all of them are in its channel's
``qos._delivered``) to now, every ``worker_heartbeat_seconds``. A message's index time is
then the last moment its holder was known alive, and the visibility timeout measures how
long the holder has been silent: it can be short (30 s by default) without redelivering
anything a live worker holds, and messages still in the queue are never touched, so a long
backlog causes no re-sends. A holder that was only silent (paused longer than the timeout)
gets its messages run twice, which every task tolerates (clarion.workers.tasks).

A thread rather than the consumer's event loop: the loop blocks in a solo or threads pool
task, and the heartbeat must not. The Redis client is the channel's own synchronous pool.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)


def held_tags(consumer: Any) -> tuple[Any, list[str]]:
    """The channel of the consumer's task messages and the tags of those it holds unacked."""
    task_consumer = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    delivered = getattr(getattr(channel, "qos", None), "_delivered", None)
    if channel is None or delivered is None:
        return None, []
    for _ in range(3):  # the event loop may add or ack one while the keys are copied
        try:
            return channel, list(delivered)
        except RuntimeError:
            continue
    return channel, []


def refresh(channel: Any, tags: list[str], now: float) -> int:
    """Set the index time of ``tags`` to ``now``; only those still unacked (``XX``: one
    acked or restored meanwhile is not added back). Returns how many were refreshed."""
    if not tags or not hasattr(channel, "unacked_index_key"):
        return 0  # not the Redis transport: nothing to refresh
    client = channel._create_client()
    return int(client.zadd(channel.unacked_index_key, dict.fromkeys(tags, now), xx=True, ch=True))


class Heartbeat(bootsteps.StartStopStep):
    """The consumer step that runs the heartbeat thread."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        every = float(parent.app.clarion.settings.worker_heartbeat_seconds)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(parent, every), name="clarion-heartbeat", daemon=True
        )
        self._thread.start()

    # stop() runs on a lost connection too, and start() again once it is back: the thread
    # keeps running across it (its refreshes fail meanwhile) and ends at shutdown only.
    def shutdown(self, parent: Any) -> None:
        self._stop.set()

    def _run(self, consumer: Any, every: float) -> None:
        import time

        while not self._stop.wait(every):
            try:
                channel, tags = held_tags(consumer)
                refresh(channel, tags, time.time())
            except Exception:  # noqa: BLE001 - a broker outage; the next beat tries again
                log.warning("heartbeat: could not refresh held messages", exc_info=True)


def install(app: Any) -> None:
    """Run the heartbeat in every worker of ``app`` (its main process, which holds the
    messages; prefork children only execute them)."""
    app.steps["consumer"].add(Heartbeat)
