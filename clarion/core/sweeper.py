"""The sweeper, on beat: nothing the database holds as open is left without a task.

It re-enqueues deliveries whose ``next_attempt_at`` has passed:

* ``pending`` ones whose task never ran (a broker that lost messages, a purge);
* ``sending`` ones whose lease expired (a worker killed mid-send);
* ``failed`` ones whose retry is due but too far out for a broker countdown (parked);
* ``deferred`` ones whose recipient's quiet hours have ended (never dispatched at create).

Each is set back to ``pending`` with a new deadline before it is re-enqueued, so a backlog
is re-sent at most once per ``sweeper_stuck_seconds``, and the deliver step's claim makes
a duplicate task a no-op.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from clarion.core.deliver import Scheduler
from clarion.db import deliveries
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings

log = logging.getLogger(__name__)


def sweep(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    scheduler: Scheduler,
    now: datetime | None = None,
) -> dict[str, int]:
    """Re-enqueue what is due; returns how many by previous status
    (pending/sending/failed/deferred)."""
    now = now or utcnow()
    with transaction(sessions) as session:
        due = deliveries.take_due(
            session=session,
            now=now,
            recheck=timedelta(seconds=settings.sweeper_stuck_seconds),
            limit=settings.sweeper_batch,
        )
    by_channel = defaultdict(list)
    for delivery_id, channel, _ in due:
        by_channel[channel].append(delivery_id)
    for channel, ids in by_channel.items():
        scheduler.deliver(channel, ids)
    counts = dict(Counter(status for _, _, status in due))
    if due:
        log.warning(
            "sweeper re-enqueued %d deliveries",
            len(due),
            extra={"swept": counts, "channels": {c: len(i) for c, i in by_channel.items()}},
        )
    return counts
