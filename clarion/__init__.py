"""Clarion: an open-source notification platform.

Producers that already run Celery can skip the HTTP API and enqueue directly::

    import clarion
    accepted = clarion.enqueue(my_celery_app, recipients=["user-42"], category="links",
                               title="Your link expires tomorrow")

``my_celery_app`` must point at Clarion's broker. The call validates exactly like
``POST /v1/notifications`` (raising ``pydantic.ValidationError``) and returns the same ids.
"""

from __future__ import annotations

from typing import Any

from clarion.version import __version__

__all__ = ["__version__", "enqueue"]


def enqueue(celery_app: Any, **fields: Any):
    """Validate a notification request and enqueue Clarion's ``create`` task on ``celery_app``."""
    from clarion.core import enqueue
    from clarion.core.schemas import NotificationCreate

    message = enqueue.prepare(NotificationCreate(**fields))
    enqueue.enqueue(celery_app, message)
    return enqueue.accepted(message)
