"""Drive the real broker from tests: count queued messages, run them as plain functions.

The API publishes to Redis for real; ``drain`` consumes those very messages and calls the
task functions in-process, so a test proves what was enqueued, to which queue, with which
arguments, without a worker process. End-to-end tests start real workers instead.
"""

from __future__ import annotations

from celery import Celery

from clarion.core import queues


def queued(app: Celery, queue: str = queues.CREATE) -> int:
    with app.connection_for_read() as conn:
        return conn.default_channel.client.llen(queue)


def drain(app: Celery, names: tuple[str, ...] = queues.ALL_QUEUES, limit: int = 10_000) -> int:
    """Run every queued task (including ones those tasks enqueue); return how many ran."""
    ran = 0
    with app.connection_for_read() as conn:
        progressed = True
        while progressed and ran < limit:
            progressed = False
            for name in names:
                simple = conn.SimpleQueue(name, no_ack=False)
                while ran < limit:
                    try:
                        message = simple.get(block=False)
                    except simple.Empty:
                        break
                    args, kwargs, _embed = message.decode()
                    app.tasks[message.headers["task"]](*args, **kwargs)
                    message.ack()
                    ran += 1
                    progressed = True
                simple.close()
    return ran
