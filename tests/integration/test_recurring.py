"""Recurring schedules on PostgreSQL: created through the API, run by the real beat function
with its clock injected, the occurrences stored by the real create and fan-out tasks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from clarion.core import recurring, send
from clarion.db.models import Notification, Schedule
from tests.broker import drain
from tests.threads import run_concurrently

BERLIN, NEW_YORK, TOKYO = "Europe/Berlin", "America/New_York", "Asia/Tokyo"


def tick(rt, now: datetime, **options) -> recurring.Tick:
    """One beat at ``now``, then the create/fan-out tasks it published."""
    done = recurring.run(
        sessions=rt.sessions,
        settings=rt.settings,
        publish=lambda messages: send.enqueue(rt.celery, *messages),
        now=now,
        **options,
    )
    if done.requests:
        drain(rt.celery)
    return done


def beats(rt, start: datetime, end: datetime, every=timedelta(minutes=10)) -> None:
    now = start
    while now <= end:
        tick(rt, now)
        now += every


@pytest.fixture
def profile(client, producer):
    def put(subscriber: str, timezone: str | None) -> None:
        body = {"timezone": timezone} if timezone else {}
        answer = client.put(f"/v1/subscribers/{subscriber}", json=body, headers=producer)
        assert answer.status_code == 200, answer.text

    return put


@pytest.fixture
def schedule(client, producer):
    def create(**fields) -> dict:
        body = {"category": "reminders", "title": "Time to review", **fields}
        answer = client.post("/v1/schedules", json=body, headers=producer)
        assert answer.status_code == 201, answer.text
        return answer.json()

    return create


def received(rt) -> list[tuple[str, datetime, str]]:
    """(recipient, created_at, dedupe key) of every stored notification, in time order."""
    with rt.sessions() as s:
        rows = s.execute(
            select(Notification.recipient_id, Notification.created_at, Notification.dedupe_key)
        ).all()
    return sorted(((r, c.astimezone(UTC), k) for r, c, k in rows), key=lambda x: x[1])


def local(at: datetime, zone: str) -> datetime:
    return at.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def test_each_recipient_gets_it_at_nine_on_their_own_clock(runtime, profile, schedule):
    for who, zone in (("ada", BERLIN), ("bob", NEW_YORK), ("cy", TOKYO)):
        profile(who, zone)
    start = datetime(2030, 6, 3, tzinfo=UTC)  # a Monday
    schedule(
        recipients=["ada", "bob", "cy"],
        recurrence={"every": "daily at 09:00", "dtstart": "2030-06-03T00:00:00"},
    )
    beats(runtime, start - timedelta(days=1), start + timedelta(days=3, hours=12))
    got = received(runtime)
    zone_of = {"ada": BERLIN, "bob": NEW_YORK, "cy": TOKYO}
    days = {who: [local(at, zone_of[who]) for r, at, _ in got if r == who] for who in zone_of}
    for who, seen in days.items():
        # 3 June 09:00 to 6 June 09:00 local, once each; New York's 6 June comes after the end.
        assert all(t.time() == datetime(2030, 1, 1, 9).time() for t in seen), (who, seen)
        assert len(seen) == len(set(seen)), who
        assert seen[0].date().isoformat() == "2030-06-03"
    assert [len(days[w]) for w in ("cy", "ada", "bob")] == [4, 4, 3]


def test_a_weekday_rule_keeps_nine_oclock_across_dst_in_berlin_and_new_york(
    runtime, profile, schedule
):
    profile("ada", BERLIN)
    profile("bob", NEW_YORK)
    schedule(
        recipients=["ada", "bob"],
        recurrence={
            "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
            "dtstart": "2030-03-04T00:00:00",
        },
    )
    # New York springs forward on 10 March 2030, Berlin on 31 March.
    beats(runtime, datetime(2030, 3, 3, tzinfo=UTC), datetime(2030, 4, 1, 20, tzinfo=UTC),
          every=timedelta(minutes=30))
    got = received(runtime)
    for who, zone in (("ada", BERLIN), ("bob", NEW_YORK)):
        seen = [local(at, zone) for r, at, _ in got if r == who]
        assert {t.time().isoformat() for t in seen} == {"09:00:00"}, (who, seen)
        assert {t.weekday() for t in seen} == {0, 1, 2, 3, 4}
        assert len(seen) == len(set(seen)) == 21  # 4 March .. 1 April, weekdays
    utc_hours = Counter(at.hour for r, at, _ in got if r == "ada")
    assert utc_hours == {8: 20, 7: 1}  # CET before 31 March, CEST after
    utc_hours = Counter(at.hour for r, at, _ in got if r == "bob")
    assert utc_hours == {14: 5, 13: 16}  # EST before 10 March, EDT after
