"""Every queue name, in one place. One queue per kind of work, so a flood of one kind
(a broadcast, a slow SMTP relay) cannot starve another."""

from __future__ import annotations

from clarion.settings import CHANNEL_KEYS

CREATE = "create"
ENGINE = "engine"
PERIODIC = "periodic"
DEAD_LETTER = "dead_letter"


def deliver_queue(channel: str) -> str:
    return f"deliver.{channel}"


ALL_QUEUES: tuple[str, ...] = (
    CREATE,
    *(deliver_queue(c) for c in CHANNEL_KEYS),
    ENGINE,
    PERIODIC,
    DEAD_LETTER,
)
# Queues whose tasks are slow network sends: keep prefetch small so one worker does not
# hoard messages another could be sending.
SLOW_QUEUES = frozenset(deliver_queue(c) for c in ("email", "push", "webhook"))
