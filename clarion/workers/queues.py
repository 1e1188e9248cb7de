"""Every queue name, in one place. One queue per kind of work, so a flood of one kind
(a broadcast, a slow SMTP relay) cannot starve another.

The pipeline's queues come in three lanes (``clarion.core.lanes``): the normal lane keeps
the historical names (``create``, ``deliver.email``, ...); the priority and bulk lanes add
a suffix (``create.priority``, ``deliver.email.bulk``, ...). Only external channels have
lane deliver queues: the inbox is delivered inside the create transaction. ``engine``,
``periodic`` and ``dead_letter`` belong to no lane.

kombu's Redis transport takes turns between the queues a worker consumes, so lanes only
separate work; strict priority comes from a worker that consumes the priority lane alone
(``clarion worker --lanes priority``).
"""

from __future__ import annotations

from collections.abc import Iterable

from clarion.core.lanes import BULK, LANES, NORMAL
from clarion.settings import CHANNEL_KEYS

CREATE = "create"
ENGINE = "engine"
PERIODIC = "periodic"
DEAD_LETTER = "dead_letter"
SERVICE_QUEUES: tuple[str, ...] = (ENGINE, PERIODIC, DEAD_LETTER)
EXTERNAL_CHANNELS: tuple[str, ...] = tuple(c for c in CHANNEL_KEYS if c != "in_app")


def _in_lane(name: str, lane: str) -> str:
    return name if lane == NORMAL else f"{name}.{lane}"


def create_queue(lane: str = NORMAL) -> str:
    """``create``, ``create.priority`` or ``create.bulk``."""
    return _in_lane(CREATE, lane)


def deliver_queue(channel: str, lane: str = NORMAL) -> str:
    """``deliver.<channel>`` on the normal lane, ``deliver.<channel>.<lane>`` on the others."""
    return _in_lane(f"deliver.{channel}", lane)


def lane_queues(lane: str) -> tuple[str, ...]:
    """The create and deliver queues of one lane."""
    channels = CHANNEL_KEYS if lane == NORMAL else EXTERNAL_CHANNELS
    return (create_queue(lane), *(deliver_queue(c, lane) for c in channels))


def queues_of(lanes: Iterable[str]) -> tuple[str, ...]:
    """The queues of these lanes, highest lane first."""
    wanted = set(lanes)
    return tuple(q for lane in LANES if lane in wanted for q in lane_queues(lane))


BULK_QUEUES = frozenset(lane_queues(BULK))
# Priority lane first and bulk last: the order `clarion worker` lists them in by default.
ALL_QUEUES: tuple[str, ...] = (*queues_of(LANES[:2]), *SERVICE_QUEUES, *lane_queues(BULK))
# Queues whose tasks are slow network sends: keep prefetch small so one worker does not
# hoard messages another could be sending.
SLOW_QUEUES = frozenset(
    deliver_queue(c, lane) for c in ("email", "push", "webhook") for lane in LANES
)
