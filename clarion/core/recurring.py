"""Recurring schedules on beat: each due (time zone, occurrence) becomes one ordinary request.

The beat task ``clarion.schedules.run`` (every ``schedule_interval_seconds``) locks the
schedules whose ``next_at`` has come (``FOR UPDATE SKIP LOCKED``) and, for each:

1. with ``timezone: subscriber``, once per occurrence and 14 hours ahead of it (the
   earliest any clock reaches a local time), groups the recipients by time zone (one
   GROUP BY, whatever their number) and remembers the zones;
2. for each zone whose clock has reached an occurrence not handled yet, publishes one
   request through the one create path (:func:`clarion.core.enqueue.enqueue`): a ``create``
   message for a list of recipients, a ``fanout`` walk of that zone's topic subscribers for
   a topic. Several due at once (downtime, a DST gap) make one: the latest, or none if
   ``catch_up`` is off and it is older than ``schedule_misfire_grace_seconds``;
3. stores each zone's last occurrence and the next instant to look, in the same
   transaction.

So beat's work per tick follows the schedules and zones due, not the recipients.
Exactly once: the request id is derived from (schedule, zone, occurrence) and the
recipients' ids from (request id, recipient) (:func:`clarion.ids.derived_ids`), and every
notification carries the dedupe key ``schedule:<id>:<local occurrence>``. Messages are
published before the commit, so a crash in between publishes the same ids again (create
skips them) rather than losing the occurrence; two beats never hold one schedule.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from clarion.core.recurrence import (
    EARLIEST_OFFSET,
    SUBSCRIBER,
    Series,
    instant,
    iso,
    parse_local,
)
from clarion.core.schemas import CreateMessage, FanoutMessage, NotificationContent
from clarion.core.wallclock import zone_of
from clarion.db import schedules
from clarion.db.models import Schedule
from clarion.db.session import transaction
from clarion.ids import as_utc, derived_id, derived_ids, utcnow
from clarion.settings import Settings

# Schedules handled per transaction; a run goes on while batches come back full.
BATCH = 200
Message = CreateMessage | FanoutMessage
Publish = Callable[[list[Message]], None]


@dataclass
class Tick:
    """What one run did: schedules looked at, requests published, occurrences skipped."""

    schedules: int = 0
    requests: int = 0
    skipped: int = 0


@dataclass
class Step:
    messages: list[Message] = field(default_factory=list)
    skipped: int = 0
    state: dict = field(default_factory=dict)


def dedupe_key(schedule_id: uuid.UUID, local: datetime) -> str:
    """At most one notification per recipient per occurrence, whichever zone they are in."""
    return f"schedule:{schedule_id}:{iso(local)}"


# zoneinfo keeps only a few zones strongly cached; a tick reads dozens, again and again.
_zone = functools.lru_cache(maxsize=1024)(zone_of)


def clock(row: Schedule, zone: str) -> ZoneInfo:
    """The clock a zone key is read on (a schedule with a fixed zone has one key)."""
    if row.timezone != SUBSCRIBER:
        return _zone(row.timezone)
    return _zone(zone or row.fallback_timezone)


def series_of(row: Schedule) -> Series:
    return Series(row.rrule, datetime.fromisoformat(row.dtstart))


def probe_instant(series: Series, probed: datetime | None) -> datetime | None:
    """When the audience must be grouped again: 14 hours before the next occurrence."""
    local = series.after(probed, since=probed)
    return None if local is None else local.replace(tzinfo=UTC) - EARLIEST_OFFSET


class Audience:
    """Who is in which zone, for one batch of due schedules: the recipients of every
    schedule with a list are read in one query (an id no longer stored, erased, is left
    out); a topic is grouped by one GROUP BY when its schedule asks."""

    def __init__(self, session: Session, rows: list[Schedule]) -> None:
        self.session = session
        listed = [r for row in rows for r in (row.recipients or ())]
        self.zone_of = schedules.zones_by_subscriber(session=session, ids=listed)

    def zones(self, row: Schedule) -> set[str]:
        if row.topic is not None:
            return set(schedules.zones_of_topic(session=self.session, topic=row.topic))
        return {self.zone_of[r] for r in row.recipients or () if r in self.zone_of}

    def in_zone(self, row: Schedule, zone: str | None) -> list[str]:
        """The schedule's stored recipients in the zone (None: in any zone)."""
        return sorted(
            r
            for r in row.recipients or ()
            if r in self.zone_of and (zone is None or self.zone_of[r] == zone)
        )


def _zones(audience: Audience, row: Schedule, series: Series, now: datetime):
    """Each zone's last handled occurrence, and the last occurrence grouped (subscriber).

    A zone seen for the first time owes nothing that fell before the schedule's anchor
    (first look) or before this look (a zone that appeared since)."""
    known = {z: parse_local(v) for z, v in (row.zones or {}).items()}
    probed = parse_local(row.probed_through)
    first = row.zones is None
    since = as_utc(row.anchor_at) if first else now
    if row.timezone != SUBSCRIBER:
        if first:
            known = {row.timezone: series.last_at_or_before(clock(row, row.timezone), since)}
        return known, probed
    due = probe_instant(series, probed)
    if not first and (due is None or due > now):
        return known, probed
    zones = {
        z: known[z] if z in known else series.last_at_or_before(clock(row, z), since)
        for z in audience.zones(row)
    }
    last = series.last_at_or_before(ZoneInfo("UTC"), now + EARLIEST_OFFSET, since=probed)
    return zones, last if last is not None else probed


def _request(audience: Audience, row: Schedule, zone: str, local: datetime, at: datetime):
    """The one request of a (zone, occurrence): ids derived, so a rerun makes the same."""
    request_id = derived_id(row.id, f"{zone}|{iso(local)}", at)
    content = NotificationContent.model_validate(
        {**row.content, "dedupe_key": dedupe_key(row.id, local)}
    )
    per_zone = row.timezone == SUBSCRIBER
    if row.topic is not None:
        return [
            FanoutMessage(
                request_id=request_id,
                accepted_at=at,
                topic=row.topic,
                content=content,
                zone=zone if per_zone else None,
            )
        ]
    ids = audience.in_zone(row, zone if per_zone else None)
    if not ids:
        return []
    items = list(zip(derived_ids(request_id, ids, at), ids, strict=True))
    return [CreateMessage(request_id=request_id, accepted_at=at, items=items, content=content)]


def advance(audience: Audience, row: Schedule, now: datetime, grace: timedelta) -> Step:
    """The requests now due for one schedule, and its state after them."""
    series = series_of(row)
    zones, probed = _zones(audience, row, series, now)
    step, sent = Step(), False
    for zone, done in zones.items():
        zone_clock = clock(row, zone)
        latest = series.last_at_or_before(zone_clock, now, since=done)
        if latest is None or (done is not None and latest <= done):
            continue
        zones[zone] = latest
        at = instant(latest, zone_clock)
        if row.catch_up or now - at <= grace:
            step.messages += _request(audience, row, zone, latest, at)
            sent = True
        else:
            step.skipped += 1
    upcoming = [series.next_instant(clock(row, z), d) for z, d in zones.items()]
    if row.timezone == SUBSCRIBER:
        upcoming.append(probe_instant(series, probed))
    next_at = min((t for t in upcoming if t is not None), default=None)
    step.state = {
        "id": row.id,
        "zones": {z: iso(d) for z, d in zones.items()},
        "probed_through": iso(probed),
        "next_at": next_at,
        "status": schedules.ACTIVE if next_at is not None else schedules.ENDED,
        "last_sent_at": now if sent else row.last_sent_at,
    }
    return step


def run(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publish: Publish,
    now: datetime | None = None,
    limit: int = BATCH,
) -> Tick:
    """Handle every schedule due by ``now`` (the clock is injectable for tests)."""
    now = now or utcnow()
    grace = timedelta(seconds=settings.schedule_misfire_grace_seconds)
    tick = Tick()
    while True:
        with transaction(sessions) as session:
            rows = schedules.take_due(session=session, now=now, limit=limit)
            audience = Audience(session, rows)
            messages: list[Message] = []
            states = []
            for row in rows:
                step = advance(audience, row, now, grace)
                states.append(step.state)
                messages += step.messages
                tick.skipped += step.skipped
            schedules.save_states(session=session, rows=states)
            # Before the commit: a crash after it re-publishes the same ids next time.
            for chunk in _chunks(messages, settings.fanout_batch):
                publish(chunk)
        tick.schedules += len(rows)
        tick.requests += len(messages)
        if len(rows) < limit:
            return tick


def _chunks(messages: list[Message], max_items: int):
    """Groups of messages of at most ``max_items`` recipients (a topic counts as one), so
    that no ``create`` task carries a huge transaction."""
    chunk: list[Message] = []
    size = 0
    for message in messages:
        weight = len(message.items) if isinstance(message, CreateMessage) else 1
        if chunk and size + weight > max_items:
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += weight
    if chunk:
        yield chunk
