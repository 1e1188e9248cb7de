"""Every queue name, in one place. One queue per kind of work, so a flood of one kind
(a broadcast, a slow SMTP relay) cannot starve another.

The pipeline's queues come in three lanes (``clarion.core.lanes``): the normal lane keeps
the historical names (``create``, ``deliver.email``, ...); the priority and bulk lanes add
a suffix (``create.priority``, ``deliver.email.bulk``, ...). Every channel of the registry
with a sender has its deliver queues; the inbox has none (it is delivered inside the create
transaction). ``engine``, ``periodic`` and ``dead_letter`` belong to no lane.

kombu's Redis transport takes turns between the queues a worker consumes, so lanes only
separate work; strict priority comes from a worker that consumes the priority lane alone
(``clarion worker --lanes priority``).
"""

from __future__ import annotations

from collections.abc import Iterable

from clarion.channels import registry
from clarion.core.lanes import BULK, LANES, NORMAL

CREATE = "create"
ENGINE = "engine"
PERIODIC = "periodic"
DEAD_LETTER = "dead_letter"
SERVICE_QUEUES: tuple[str, ...] = (ENGINE, PERIODIC, DEAD_LETTER)
EXTERNAL_CHANNELS: tuple[str, ...] = registry.external()


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
    return (create_queue(lane), *(deliver_queue(c, lane) for c in EXTERNAL_CHANNELS))


EVERY_CHANNEL = "deliver.*"


def expand(names: Iterable[str]) -> list[str]:
    """Queue names as given to ``clarion worker --queues``, with ``deliver.*`` standing for
    every channel's deliver queue on the normal lane: deploy commands name no channel, so
    a channel added by a package is consumed without editing them."""
    found: list[str] = []
    for name in names:
        found += [deliver_queue(c) for c in EXTERNAL_CHANNELS] if name == EVERY_CHANNEL else [name]
    return found


def queues_of(lanes: Iterable[str]) -> tuple[str, ...]:
    """The queues of these lanes, highest lane first."""
    wanted = set(lanes)
    return tuple(q for lane in LANES if lane in wanted for q in lane_queues(lane))


BULK_QUEUES = frozenset(lane_queues(BULK))
# Priority lane first and bulk last: the order `clarion worker` lists them in by default.
ALL_QUEUES: tuple[str, ...] = (*queues_of(LANES[:2]), *SERVICE_QUEUES, *lane_queues(BULK))


def prefetch_of(consumed: Iterable[str]) -> int | None:
    """The smallest prefetch multiplier the channels of these deliver queues ask for."""
    wanted = set(consumed)
    asked = [
        spec.prefetch
        for key, spec in registry.specs().items()
        if spec.prefetch is not None and any(deliver_queue(key, lane) in wanted for lane in LANES)
    ]
    return min(asked, default=None)
