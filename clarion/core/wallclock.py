"""Times of day on a subscriber's clock: quiet-hours windows and digest periods.

Pure functions of their arguments (``now`` is always passed in). Wall-clock times are read
in the subscriber's IANA zone with :mod:`zoneinfo`, so a window or a period that spans a
daylight-saving change ends at the time the subscriber's clock shows, not a fixed number of
hours after it began.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta

DEFAULT_DIGEST_AT = "09:00"
DEFAULT_DIGEST_WEEKDAY = 0  # Monday
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_hhmm(value: str) -> time:
    """``"HH:MM"`` (24-hour) as a time; ValueError otherwise."""
    if not HHMM.match(value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return time(int(value[:2]), int(value[3:]))


def zone_of(name: str | None) -> zoneinfo.ZoneInfo:
    """The subscriber's zone; UTC when unset. Unknown names are refused where they are
    stored (the API), so one here means the zone database lost it: fall back to UTC."""
    if not name:
        return zoneinfo.ZoneInfo("UTC")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def check_zone(name: str) -> str:
    """The name if the IANA zone database knows it; ValueError otherwise."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


def wall_clock(day: date, at: time, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant (UTC) at which the clock in ``zone`` shows ``at`` or later on ``day``.

    A time shown twice (the repeated hour of a fall-back night) is its first occurrence; a
    time the clock skips (spring-forward) is the moment the clock jumps past it.
    """
    naive = datetime.combine(day, at)
    after_jump = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if after_jump.astimezone(zone).replace(tzinfo=None) == naive:
        return after_jump
    # A skipped time: fold=0 reads it with the offset from before the jump (an instant after
    # it), fold=1 with the one from after (an instant before it). zoneinfo does not expose
    # its transitions, so find the jump between the two, to the second.
    low = int(naive.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(after_jump.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        shown = datetime.fromtimestamp(middle, zone).replace(tzinfo=None)
        low, high = (low, middle) if shown >= naive else (middle, high)
    return datetime.fromtimestamp(high, UTC)


def quiet_until(
    start: str | None, end: str | None, tz: str | None, now: datetime
) -> datetime | None:
    """The end (UTC) of the quiet window ``now`` falls in, or None outside it.

    The window is [start, end) on the subscriber's wall clock and crosses midnight when
    start > end (22:00–07:00); equal or missing bounds mean no quiet hours.
    """
    if not start or not end or start == end:
        return None
    zone = zone_of(tz)
    begin, finish = parse_hhmm(start), parse_hhmm(end)
    local = now.astimezone(zone)
    clock, today = local.time(), local.date()
    if begin < finish:
        inside, day = begin <= clock < finish, today
    else:
        inside = clock >= begin or clock < finish
        day = today + timedelta(days=1) if clock >= begin else today
    if not inside:
        return None
    ends = wall_clock(day, finish, zone)
    if ends <= now:
        # The second pass of a fall-back night's repeated hour: the end shown twice is
        # behind us once; the window ends when the clock shows it again.
        ends = datetime.combine(day, finish, tzinfo=zone).replace(fold=1).astimezone(UTC)
    return ends


def next_digest_at(
    cadence: str, at: str | None, weekday: int | None, tz: str | None, now: datetime
) -> datetime:
    """The end (UTC, strictly after ``now``) of the digest period ``now`` falls in.

    hourly: the next top of the hour on the subscriber's clock; daily: the next ``at``
    (default 09:00) in ``tz``; weekly: the next ``weekday`` (0 = Monday, default) at ``at``.
    """
    zone = zone_of(tz)
    local = now.astimezone(zone)
    if cadence == "hourly":
        top = local.replace(minute=0, second=0, microsecond=0)
        return top.astimezone(UTC) + timedelta(hours=1)
    if cadence not in ("daily", "weekly"):
        raise ValueError(f"{cadence!r} has no digest period")
    when = parse_hhmm(at or DEFAULT_DIGEST_AT)
    day, step = local.date(), 1
    if cadence == "weekly":
        target = DEFAULT_DIGEST_WEEKDAY if weekday is None else weekday
        day, step = day + timedelta(days=(target - day.weekday()) % 7), 7
    ends = wall_clock(day, when, zone)
    while ends <= now:
        day += timedelta(days=step)
        ends = wall_clock(day, when, zone)
    return ends


def iso_utc(value: datetime) -> str:
    """``2025-03-30T05:00:00Z``: how reasons name an instant."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
