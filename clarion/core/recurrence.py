"""Recurrence: when a recurring schedule's occurrences fall, on whose clock.

A schedule's occurrences are an RFC 5545 RRULE expanded by python-dateutil from a
*floating* (zone-less) ``dtstart``: a sequence of local wall-clock times such as
"2025-06-02 09:00, 2025-06-03 09:00, …". Each is turned into an instant on a zone's clock
with :func:`clarion.core.wallclock.wall_clock`, the rule quiet hours and digests already
use: a time the clock shows twice (fall back) is its first showing, a time the clock skips
(spring forward) is the moment the clock jumps past it. So "09:00 Europe/Berlin" stays
09:00 across a change, and each recipient of a ``timezone: subscriber`` schedule gets it at
09:00 on their own clock.

Pure functions and models; nothing here reads the clock or the database.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil import rrule as du
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clarion.core.wallclock import check_zone, parse_hhmm, wall_clock, zone_of

SUBSCRIBER = "subscriber"
# The widest UTC offsets in the zone database: a floating local time L is reached first
# at L - 14 h (Pacific/Kiritimati) and last at L + 12 h (Etc/GMT+12).
EARLIEST_OFFSET = timedelta(hours=14)
# How far a zone's clock may stand from its standard offset (DST): a margin when looking
# for the latest occurrence at or before an instant.
DST_MARGIN = timedelta(hours=3)
DAYS = {
    "monday": "MO",
    "tuesday": "TU",
    "wednesday": "WE",
    "thursday": "TH",
    "friday": "FR",
    "saturday": "SA",
    "sunday": "SU",
}
DAY_CODES = {**DAYS, **{code.lower(): code for code in DAYS.values()}}
_AT = r"(?:\s+at\s+(?P<at>\d\d:\d\d))?"
_SHORTHANDS = (
    (re.compile(r"^hourly$"), "hourly"),
    (re.compile(r"^every\s+(?:(?P<n>\d+)\s+)?(?P<unit>minute|hour|day)s?" + _AT + "$"), "every"),
    (re.compile(r"^(?:daily|every\s+day)" + _AT + "$"), "daily"),
    (re.compile(r"^(?:weekdays|every\s+weekday)" + _AT + "$"), "weekdays"),
    (
        re.compile(r"^(?:weekly\s+on|every)\s+(?P<days>[a-z]+(?:\s*,\s*[a-z]+)*)" + _AT + "$"),
        "weekly",
    ),
    (re.compile(r"^monthly\s+on\s+day\s+(?P<day>-?\d{1,2})" + _AT + "$"), "monthly"),
)


_UTC_UNTIL = re.compile(r"UNTIL=\d{8}(T\d{6})?Z", re.IGNORECASE)


class RecurrenceError(ValueError):
    """The rule cannot be used: not RFC 5545, a frequency finer than a minute, an UNTIL
    with a zone (occurrences are local times), or an unknown shorthand. A 422."""


def _clock(at: str | None) -> str:
    when = parse_hhmm(at or "00:00")
    return f"BYHOUR={when.hour};BYMINUTE={when.minute};BYSECOND=0"


def from_shorthand(text: str) -> str:
    """The RRULE of a shorthand: ``daily at 09:00``, ``weekdays at 09:00``, ``every monday,
    thursday at 17:30``, ``monthly on day 1 at 08:00``, ``hourly``, ``every 15 minutes``,
    ``every 2 hours``, ``every 3 days at 07:00``."""
    said = " ".join(text.lower().split())
    for pattern, kind in _SHORTHANDS:
        match = pattern.match(said)
        if match is None:
            continue
        parts = match.groupdict()
        if kind == "hourly":
            return "FREQ=HOURLY;BYMINUTE=0;BYSECOND=0"
        if kind == "every":
            n, unit = int(parts["n"] or 1), parts["unit"]
            if n < 1:
                break
            freq = {"minute": "MINUTELY", "hour": "HOURLY", "day": "DAILY"}[unit]
            tail = _clock(parts["at"]) if unit == "day" else "BYSECOND=0"
            if parts["at"] and unit != "day":
                break
            return f"FREQ={freq};INTERVAL={n};{tail}"
        if kind == "daily":
            return f"FREQ=DAILY;{_clock(parts['at'])}"
        if kind == "weekdays":
            return f"FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;{_clock(parts['at'])}"
        if kind == "weekly":
            names = [d.strip() for d in parts["days"].split(",")]
            if not all(d in DAY_CODES for d in names):
                break
            days = ",".join(dict.fromkeys(DAY_CODES[d] for d in names))
            return f"FREQ=WEEKLY;BYDAY={days};{_clock(parts['at'])}"
        day = int(parts["day"])
        if not (1 <= abs(day) <= 31):
            break
        return f"FREQ=MONTHLY;BYMONTHDAY={day};{_clock(parts['at'])}"
    raise RecurrenceError(
        f"{text!r} is not a shorthand Clarion knows: use 'daily at 09:00', 'weekdays at 09:00', "
        "'every monday,thursday at 17:30', 'monthly on day 1 at 08:00', 'hourly', "
        "'every 15 minutes', 'every 2 hours', 'every 3 days at 07:00', or an RRULE"
    )


def _split(text: str) -> tuple[str, datetime | None]:
    """The RRULE body (without ``RRULE:``) and the floating DTSTART of a DTSTART line."""
    body, start = None, None
    for line in (x.strip() for x in text.strip().splitlines() if x.strip()):
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        if name == "DTSTART":
            value = line.split(":", 1)[-1]
            if ";" in line.split(":", 1)[0] or value.endswith("Z"):
                raise RecurrenceError(
                    "DTSTART is a local wall-clock time here (no Z, no TZID): the zone is "
                    "`timezone`"
                )
            try:
                start = datetime.strptime(value, "%Y%m%dT%H%M%S")
            except ValueError:
                raise RecurrenceError(f"DTSTART {value!r} is not YYYYMMDDTHHMMSS") from None
        elif name in ("RRULE", "FREQ") or line.upper().startswith("FREQ="):
            if body is not None:
                raise RecurrenceError("give one RRULE")
            body = line.split(":", 1)[1] if name == "RRULE" else line
        else:
            raise RecurrenceError(f"only DTSTART and one RRULE are understood, not {name}")
    if body is None:
        raise RecurrenceError("no RRULE (FREQ=…) given")
    return body, start


def build(rule: str, dtstart: datetime) -> du.rrule:
    """The dateutil rule; RecurrenceError when it cannot be used."""
    if _UTC_UNTIL.search(rule):
        raise RecurrenceError(
            "UNTIL is a local wall-clock time here (no Z): occurrences are read on each "
            "zone's clock"
        )
    try:
        built = du.rrulestr(rule, dtstart=dtstart)
    except (ValueError, TypeError) as exc:
        raise RecurrenceError(f"not a valid RRULE: {exc}") from None
    if not isinstance(built, du.rrule):
        raise RecurrenceError("give one RRULE")
    if built._freq == du.SECONDLY:  # noqa: SLF001 - dateutil keeps the parts private
        raise RecurrenceError("the finest frequency is MINUTELY")
    return built


@functools.lru_cache(maxsize=8192)
def _cached(rule: str, dtstart: datetime) -> du.rrule:
    # Parsing is most of a rule's cost, and many schedules share a rule and a start (a
    # tick handles ~200 of them); dateutil's rules are not changed by queries.
    return build(rule, dtstart)


class Recurrence(BaseModel):
    """When a schedule's notifications are sent: a rule, a start, and whose clock."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"every": "weekdays at 09:00", "timezone": "subscriber"},
                {
                    "rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=8;BYMINUTE=30;COUNT=10",
                    "dtstart": "2025-06-02T00:00:00",
                    "timezone": "Europe/Berlin",
                    "catch_up": False,
                },
            ]
        },
    )

    rrule: str | None = Field(
        default=None,
        max_length=1000,
        description="An RFC 5545 RRULE such as `FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=9;"
        "BYMINUTE=0`, with UNTIL (a local time, no Z) or COUNT if it ends; a `DTSTART:"
        "YYYYMMDDTHHMMSS` line may come first. Either this or `every`.",
    )
    every: str | None = Field(
        default=None,
        max_length=100,
        description="A shorthand instead of `rrule`: 'daily at 09:00', 'weekdays at 09:00', "
        "'every monday,thursday at 17:30', 'monthly on day 1 at 08:00', 'hourly', "
        "'every 15 minutes', 'every 2 hours'.",
    )
    dtstart: datetime | None = Field(
        default=None,
        description="The local wall-clock start (no offset). Default: midnight of the day "
        "the schedule is created, on its clock. Earlier occurrences are never sent.",
    )
    timezone: str = Field(
        default=SUBSCRIBER,
        max_length=64,
        description="'subscriber': each recipient's own clock (their profile's time zone), "
        "so 09:00 is 09:00 for everyone; or an IANA zone such as 'Europe/Berlin' for one "
        "clock for all.",
    )
    fallback_timezone: str = Field(
        default="UTC",
        max_length=64,
        description="With timezone 'subscriber': the clock of recipients without a time zone.",
    )
    catch_up: bool = Field(
        default=True,
        description="After downtime, send the latest missed occurrence once (true), or skip "
        "occurrences more than CLARION_SCHEDULE_MISFIRE_GRACE_SECONDS late (false). Never "
        "one per missed slot.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return value if value == SUBSCRIBER else check_zone(value)

    @field_validator("fallback_timezone")
    @classmethod
    def _fallback(cls, value: str) -> str:
        return check_zone(value)

    @field_validator("dtstart")
    @classmethod
    def _floating(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError("dtstart is a local wall-clock time: give it without an offset")
        return value.replace(microsecond=0) if value else None

    @model_validator(mode="after")
    def _one_rule(self) -> Recurrence:
        if (self.rrule is None) == (self.every is None):
            raise ValueError("give either rrule or every")
        rule, start = (from_shorthand(self.every), None) if self.every else _split(self.rrule)
        if start is not None and self.dtstart is not None and start != self.dtstart:
            raise ValueError("DTSTART in rrule and dtstart differ: give one")
        build(rule, start or self.dtstart or datetime(2000, 1, 1))
        if start is not None:
            self.dtstart = start
        return self

    def rule_text(self) -> str:
        """The RRULE body this recurrence stands for (shorthand expanded)."""
        return from_shorthand(self.every) if self.every else _split(self.rrule or "")[0]

    def zone_name(self) -> str:
        """The zone whose clock reads "today" for the default start."""
        return self.fallback_timezone if self.timezone == SUBSCRIBER else self.timezone


def default_start(zone: str, now: datetime) -> datetime:
    """Midnight of ``now``'s day on ``zone``'s clock (floating)."""
    return datetime.combine(now.astimezone(zone_of(zone)).date(), time())


def iso(local: datetime | None) -> str | None:
    """How an occurrence is named in state and dedupe keys: ``2025-06-02T09:00:00``."""
    return local.isoformat(timespec="seconds") if local else None


def parse_local(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant ``zone``'s clock shows ``local`` (the quiet-hours rule for DST)."""
    return wall_clock(local.date(), local.time(), zone)


@dataclass(frozen=True)
class Series:
    """A schedule's occurrences (floating local times) and where they fall on a clock."""

    rule: str
    dtstart: datetime

    def _built(self, since: datetime | None) -> du.rrule:
        # dateutil walks from dtstart on every query. Without COUNT the rest of the series
        # from any occurrence is the same, so start from the last one handled: a rule that
        # has run every minute for a year does not replay the year at each tick.
        start = self.dtstart
        if since is not None and since > start and "COUNT=" not in self.rule.upper():
            start = since
        return _cached(self.rule, start)

    def after(self, local: datetime | None, since: datetime | None = None) -> datetime | None:
        """The first occurrence strictly after ``local`` (the first of all when None);
        ``since`` is an occurrence at or before ``local`` to expand from."""
        built = self._built(since)
        return built.after(local, inc=False) if local else built.after(self.dtstart, inc=True)

    def last_at_or_before(
        self, zone: ZoneInfo, moment: datetime, since: datetime | None = None
    ) -> datetime | None:
        """The latest occurrence whose instant on ``zone`` is at or before ``moment``
        (None when there is none, or none from the occurrence ``since`` on)."""
        built = self._built(since)
        local_now = moment.astimezone(zone).replace(tzinfo=None)
        # Around a DST change an occurrence a little after the clock's reading may already
        # be due (the repeated hour) and one a little before it not yet: look near it.
        near = built.between(local_now - DST_MARGIN, local_now + DST_MARGIN, inc=True)
        for local in reversed(near):
            if instant(local, zone) <= moment:
                return local
        return built.before(local_now - DST_MARGIN, inc=True)

    def next_instant(self, zone: ZoneInfo, done: datetime | None) -> datetime | None:
        """When the first occurrence after ``done`` falls on ``zone``'s clock."""
        local = self.after(done, since=done)
        return instant(local, zone) if local else None

    def upcoming(self, after: datetime, count: int, since: datetime | None = None) -> list:
        """The next ``count`` occurrences strictly after the floating time ``after``."""
        found: list[datetime] = []
        local: datetime | None = after
        while len(found) < count and local is not None:
            local = self.after(local, since=found[-1] if found else since)
            if local is not None:
                found.append(local)
        return found
