"""Lanes: which notifications may wait behind which.

Three lanes, each with its own create and deliver queues (``clarion.core.queues``), so a
100,000-recipient broadcast never sits in front of a password reset:

* ``priority``: critical and high severity (a handful of messages, latency matters);
* ``bulk``: topic fan-out and digests (huge, nobody waits on one message);
* ``normal``: everything else.

A notification keeps its lane from the API to its last delivery attempt: the create task
is published on the lane's create queue, and create dispatches its deliveries, and the
deliver step its retries, on the same lane's deliver queues.
"""

from __future__ import annotations

from typing import Final, Literal

Lane = Literal["priority", "normal", "bulk"]
PRIORITY: Final = "priority"
NORMAL: Final = "normal"
BULK: Final = "bulk"
# Highest first: the order a worker that consumes every lane lists its queues in.
LANES: tuple[str, ...] = (PRIORITY, NORMAL, BULK)
PRIORITY_SEVERITIES = frozenset({"critical", "high"})
BULK_TYPES = frozenset({"digest"})


def lane_for(severity: str, type: str | None = None) -> str:
    """The lane of one notification from what it is (a fan-out batch is bulk by itself)."""
    if type in BULK_TYPES:
        return BULK
    if severity in PRIORITY_SEVERITIES:
        return PRIORITY
    return NORMAL


def parse_lanes(text: str) -> tuple[str, ...]:
    """``"priority,normal"`` → the lanes in priority order; unknown names raise ValueError."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(LANES))
    if unknown or not names:
        raise ValueError(f"unknown lanes {unknown or [text]}; known: {', '.join(LANES)}")
    return tuple(lane for lane in LANES if lane in names)
