"""The dead-letter queue, for operators: list, inspect, replay (one or by filter), purge.

Replays and purges are audited (who, when, which filter, how many). A replay moves the
delivery back to ``pending`` with a fresh set of attempts and enqueues it; the dead letter
stays, marked replayed, so the history is kept until it is purged.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clarion.core.deliver import Scheduler
from clarion.db import deliveries
from clarion.db.deliveries import DeadLetterFilter
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings


def _detail(where: DeadLetterFilter) -> dict[str, Any]:
    """The filter as the audit log stores it."""
    detail = {k: v for k, v in dataclasses.asdict(where).items() if v is not None}
    return {
        k: v.isoformat() if hasattr(v, "isoformat") else list(v) if isinstance(v, tuple) else v
        for k, v in detail.items()
    }


def replay(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    scheduler: Scheduler,
    actor: str,
    where: DeadLetterFilter,
) -> dict[str, Any]:
    """Replay the open dead letters matching ``where``."""
    now = utcnow()
    with transaction(sessions) as session:
        revived = deliveries.revive(
            session=session,
            where=where,
            now=now,
            actor=actor,
            recheck=timedelta(seconds=settings.sweeper_stuck_seconds),
        )
        count = sum(len(v) for v in revived.values())
        entry = deliveries.audit(
            session=session,
            actor=actor,
            action="dead_letters.replay",
            detail=_detail(where),
            count=count,
            now=now,
        )
    for channel, delivery_ids in revived.items():
        scheduler.deliver(channel, delivery_ids)
    return {"replayed": count, "audit_id": entry.id}


def purge(
    *, sessions: sessionmaker[Session], actor: str, where: DeadLetterFilter
) -> dict[str, Any]:
    """Delete the dead letters matching ``where`` (their deliveries stay ``dead``)."""
    now = utcnow()
    with transaction(sessions) as session:
        count = deliveries.purge_dead_letters(session=session, where=where)
        entry = deliveries.audit(
            session=session,
            actor=actor,
            action="dead_letters.purge",
            detail=_detail(where),
            count=count,
            now=now,
        )
    return {"purged": count, "audit_id": entry.id}
