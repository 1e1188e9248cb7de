"""Recurrence rules on a wall clock: DST, shorthands, refusals (pure, no services)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from clarion.core.recurrence import Recurrence, Series, from_shorthand, instant

BERLIN = ZoneInfo("Europe/Berlin")


def test_a_skipped_local_time_fires_when_the_clock_jumps_as_quiet_hours_end():
    # 30 March 2025, Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    assert instant(datetime(2025, 3, 30, 2, 30), BERLIN) == datetime(2025, 3, 30, 1, tzinfo=UTC)


def test_a_repeated_local_time_fires_at_its_first_showing():
    # 26 October 2025, Berlin: 02:30 happens at 00:30 UTC (CEST) and at 01:30 UTC (CET).
    assert instant(datetime(2025, 10, 26, 2, 30), BERLIN) == datetime(
        2025, 10, 26, 0, 30, tzinfo=UTC
    )


def test_the_latest_due_occurrence_in_a_repeated_hour_is_found_on_its_second_pass():
    series = Series("FREQ=DAILY;BYHOUR=2;BYMINUTE=30;BYSECOND=0", datetime(2025, 10, 20))
    # 01:10 UTC is 02:10 CET, the second pass: 02:30 (first pass, 00:30 UTC) is already due.
    moment = datetime(2025, 10, 26, 1, 10, tzinfo=UTC)
    assert series.last_at_or_before(BERLIN, moment) == datetime(2025, 10, 26, 2, 30)


@pytest.mark.parametrize(
    "text, rule",
    [
        ("daily at 09:00", "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0"),
        ("Weekdays at 17:30", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=17;BYMINUTE=30;BYSECOND=0"),
        ("every monday, friday at 08:00", "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=8;BYMINUTE=0;BYSECOND=0"),
        ("every 15 minutes", "FREQ=MINUTELY;INTERVAL=15;BYSECOND=0"),
        ("hourly", "FREQ=HOURLY;BYMINUTE=0;BYSECOND=0"),
        ("monthly on day 1 at 08:00", "FREQ=MONTHLY;BYMONTHDAY=1;BYHOUR=8;BYMINUTE=0;BYSECOND=0"),
    ],
)
def test_shorthands(text, rule):
    assert from_shorthand(text) == rule


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"rrule": "FREQ=SECONDLY"}, "MINUTELY"),
        ({"rrule": "FREQ=DAILY;UNTIL=20300101T000000Z"}, "UNTIL is a local"),
        ({"rrule": "DTSTART;TZID=Europe/Paris:20300101T090000\nRRULE:FREQ=DAILY"}, "TZID"),
        ({"every": "every 0 minutes"}, "not a shorthand"),
        ({"every": "daily at 24:00"}, "HH:MM"),
        ({"rrule": "FREQ=DAILY", "every": "hourly"}, "either"),
        ({"every": "hourly", "dtstart": "2030-01-01T00:00:00+02:00"}, "without an offset"),
    ],
)
def test_refusals_say_why(fields, message):
    with pytest.raises(ValidationError) as caught:
        Recurrence(**fields)
    assert message in str(caught.value)


def test_a_dtstart_line_in_the_rule_sets_the_start_and_count_ends_it():
    rec = Recurrence(rrule="DTSTART:20300101T083000\nRRULE:FREQ=DAILY;COUNT=2")
    assert rec.dtstart == datetime(2030, 1, 1, 8, 30)
    series = Series(rec.rule_text(), rec.dtstart)
    assert series.upcoming(datetime(2029, 1, 1), 5) == [
        datetime(2030, 1, 1, 8, 30),
        datetime(2030, 1, 2, 8, 30),
    ]
