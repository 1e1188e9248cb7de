"""A one-provider channel's retries go as soon as its provider answers again.

Backoff spaces a delivery's attempts so that a provider that is down is not hammered, but
after an outage of an SMTP relay the backlog would wait out each delivery's backoff
(minutes) although the relay is back. For a channel whose every send goes through one
provider (``ChannelSpec.one_provider``), the first success after that proves it is back:
its retries still waiting are made due, and the sweeper enqueues them within its interval.
Per-target channels (web push, webhooks) are left alone: one endpoint answering says
nothing of another's.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from sqlalchemy.orm import Session

from clarion.channels import registry
from clarion.db import deliveries
from clarion.ids import utcnow
from clarion.settings import Settings

log = logging.getLogger(__name__)

_checked: dict[str, float] = {}
_lock = threading.Lock()


def answered(session: Session, channel: str, settings: Settings) -> int:
    """After a send of ``channel`` succeeded: bring its waiting retries forward, at most
    once per sweeper interval per process. Returns how many were made due."""
    spec = registry.spec(channel)
    if spec is None or not spec.one_provider:
        return 0
    now_mono = time.monotonic()
    with _lock:
        if now_mono - _checked.get(channel, -math.inf) < settings.sweeper_interval_seconds:
            return 0
        _checked[channel] = now_mono
    with session.begin():
        n = deliveries.bring_forward(
            session=session, channel=channel, now=utcnow(), limit=settings.sweeper_batch
        )
    if n:
        log.info("%s answers again: %d waiting retries are due now", channel, n)
    return n
