"""The ``deliver`` step for external channels: a delivery row's state machine.

pending → sending → sent | failed | dead, or → skipped. Every move is a conditional UPDATE
on the expected current status, so a re-run, or two workers racing on one delivery, can
act at most once. The channel senders themselves (email, push, webhook) plug in through
``clarion.channels.REGISTRY``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from clarion import channels
from clarion.db.models import Delivery
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings


@dataclass
class DeliverResult:
    skipped: int = 0


def skip(*, session: Session, ids: list[uuid.UUID], reason: str) -> int:
    """Move pending deliveries to skipped with the reason; others are left alone."""
    now = utcnow()
    return session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.status == "pending")
        .values(status="skipped", last_error=reason, updated_at=now)
    ).rowcount


def deliver(
    delivery_ids: list[uuid.UUID],
    *,
    channel: str,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> DeliverResult:
    """Deliver pending deliveries of one channel; unconfigured channels skip with a reason."""
    try:
        channels.build(channel, settings)
    except channels.ChannelNotConfigured as exc:
        with transaction(sessions) as session:
            return DeliverResult(skipped=skip(session=session, ids=delivery_ids, reason=str(exc)))
    raise NotImplementedError(f"sender for channel {channel!r} comes with the channels issue")
