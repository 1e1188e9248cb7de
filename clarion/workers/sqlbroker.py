"""The embedded broker: kombu's SQLAlchemy transport, woken at once by its own publishes.

kombu's virtual transports poll: when every queue is empty the consumer sleeps
``polling_interval`` (1 s) before it looks again, so in ``clarion dev`` a notification
waited up to a second between the API's publish and the worker. Polling faster costs a
round of queries on every queue (16) each time, idle or not. In the embedded mode the API,
beat and the worker share one process, so a publish can simply wake the sleeping consumer:
the wait ends as soon as anything is put on any queue, and the interval only bounds how
late a message published by another process is seen.

Used for every ``sqla+`` broker URL (``clarion.workers.app.celery_config``).
"""

from __future__ import annotations

import threading
from queue import Empty
from time import monotonic

from kombu.transport import sqlalchemy as sqla

# Set by every publish in this process; a hint only (a missed one costs one interval).
_published = threading.Event()


class Channel(sqla.Channel):
    def _put(self, queue, payload, **kwargs):
        super()._put(queue, payload, **kwargs)
        _published.set()


class Transport(sqla.Transport):
    """The SQLAlchemy transport whose idle wait ends at the next publish in this process."""

    Channel = Channel

    def drain_events(self, connection, timeout=None):
        """kombu's loop (``virtual.Transport.drain_events``) with the sleep replaced by a
        wait on :data:`_published`, cleared before each look at the queues so that a
        publish during the look is never missed."""
        started = monotonic()
        while True:
            _published.clear()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                waited = monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise TimeoutError() from None
                pause = self.polling_interval or 0
                if timeout is not None:
                    pause = min(pause, timeout - waited)
                _published.wait(pause)
