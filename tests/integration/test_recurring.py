"""Recurring schedules on PostgreSQL: created through the API, run by the real beat function
with its clock injected, the occurrences stored by the real create and fan-out tasks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from clarion.core import enqueue, recurring
from clarion.db.models import Notification, Schedule
from tests.broker import drain
from tests.threads import run_concurrently

BERLIN, NEW_YORK, TOKYO = "Europe/Berlin", "America/New_York", "Asia/Tokyo"


def tick(rt, now: datetime, **options) -> recurring.Tick:
    """One beat at ``now``, then the create/fan-out tasks it published."""
    done = recurring.run(
        sessions=rt.sessions,
        settings=rt.settings,
        publish=lambda messages: enqueue.enqueue(rt.celery, *messages),
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
    span = (datetime(2030, 3, 3, tzinfo=UTC), datetime(2030, 4, 1, 20, tzinfo=UTC))
    beats(runtime, *span, every=timedelta(hours=1))
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


def per_occurrence(rt) -> Counter:
    return Counter((r, key) for r, _, key in received(rt))


def test_two_beats_racing_for_many_intervals_send_each_occurrence_once(
    runtime, client, producer, profile, schedule
):
    profile("ada", BERLIN)
    profile("bob", NEW_YORK)
    topic = client.put(
        "/v1/topics/night-shift/subscribers", json={"add": ["cy", "dan"]}, headers=producer
    )
    assert topic.status_code == 200
    profile("cy", TOKYO)
    every = {"every": "every 15 minutes", "dtstart": "2030-06-03T00:00:00"}
    schedule(recipients=["ada", "bob"], recurrence=every)
    schedule(topic="night-shift", recurrence=every)
    schedule(recipients=["ada"], recurrence={**every, "timezone": BERLIN})

    start = datetime(2030, 6, 3, 6, tzinfo=UTC)
    now = start
    while now < start + timedelta(hours=3):
        errors = run_concurrently(
            lambda _, at=now: recurring.run(
                sessions=runtime.sessions,
                settings=runtime.settings,
                publish=lambda messages: enqueue.enqueue(runtime.celery, *messages),
                now=at,
                limit=1,
            ),
            range(2),
        )
        assert errors == []
        now += timedelta(minutes=5)
    drain(runtime.celery)

    counts = per_occurrence(runtime)
    assert set(counts.values()) == {1}
    by_recipient = Counter(r for r, _ in counts)
    # 06:00..08:45 UTC in 15-minute steps on every clock: 12 occurrences for each recipient
    # of each schedule (ada is in two).
    assert by_recipient == {"ada": 24, "bob": 12, "cy": 12, "dan": 12}


def test_a_crash_between_publishing_and_committing_sends_nothing_twice(runtime, profile, schedule):
    profile("ada", BERLIN)
    schedule(recipients=["ada"], recurrence={"every": "hourly", "timezone": BERLIN})
    due = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=5, second=0, microsecond=0)

    def publish_then_crash(messages):
        enqueue.enqueue(runtime.celery, *messages)
        raise ConnectionError("beat died before its commit")

    with pytest.raises(ConnectionError):
        recurring.run(
            sessions=runtime.sessions,
            settings=runtime.settings,
            publish=publish_then_crash,
            now=due,
        )
    drain(runtime.celery)
    assert len(received(runtime)) == 1  # the published occurrence is stored…
    tick(runtime, due)  # …and the rerun publishes the same ids again: nothing new
    tick(runtime, due + timedelta(seconds=30))
    [(who, at, key)] = received(runtime)
    assert who == "ada" and local(at, BERLIN).minute == 0


def test_pause_sends_nothing_and_resume_goes_on_from_now(
    runtime, client, producer, profile, schedule
):
    profile("ada", BERLIN)
    made = schedule(recipients=["ada"], recurrence={"every": "hourly", "timezone": BERLIN})
    path = f"/v1/schedules/{made['id']}"
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    tick(runtime, first)
    assert len(received(runtime)) == 1

    paused = client.post(f"{path}/pause", headers=producer)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert client.post(f"{path}/pause", headers=producer).status_code == 200  # again: no-op
    for hours in (1, 2, 3):
        tick(runtime, first + timedelta(hours=hours))
    assert len(received(runtime)) == 1

    resumed = client.post(f"{path}/resume", headers=producer)
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    # The resume happened at half past, three hours on, in the simulation's time.
    resumed_at = first + timedelta(hours=3, minutes=30)
    with runtime.sessions() as s, s.begin():
        s.execute(
            update(Schedule)
            .where(Schedule.id == made["id"])
            .values(anchor_at=resumed_at, next_at=resumed_at)
        )
    tick(runtime, resumed_at)
    assert len(received(runtime)) == 1  # nothing owed for the hours it was paused
    tick(runtime, first + timedelta(hours=4))
    got = received(runtime)
    assert len(got) == 2 and got[-1][1] == first + timedelta(hours=4)


@pytest.mark.parametrize("catch_up, expected", [(True, 1), (False, 0)])
def test_after_downtime_the_missed_occurrences_come_once_or_not_at_all(
    runtime, profile, schedule, catch_up, expected
):
    profile("ada", BERLIN)
    schedule(
        recipients=["ada"],
        recurrence={
            "every": "daily at 09:00",
            "timezone": BERLIN,
            "dtstart": "2030-06-03T00:00:00",
            "catch_up": catch_up,
        },
    )
    tick(runtime, datetime(2030, 6, 3, 7, 0, 5, tzinfo=UTC))  # 09:00:05 in Berlin
    assert len(received(runtime)) == 1
    # Everything down from then until 6 June, 10:00 Berlin: three 09:00s were missed.
    tick(runtime, datetime(2030, 6, 6, 8, tzinfo=UTC))
    got = received(runtime)
    assert len(got) == 1 + expected
    if catch_up:  # the latest one, once, not one per missed day
        assert local(got[-1][1], BERLIN) == datetime(2030, 6, 6, 9)
    tick(runtime, datetime(2030, 6, 7, 7, tzinfo=UTC))  # back to normal the next day
    assert local(received(runtime)[-1][1], BERLIN) == datetime(2030, 6, 7, 9)


def test_a_topic_schedule_sends_one_fanout_per_zone_and_each_subscriber_once(
    runtime, client, producer, profile, schedule
):
    members = [f"m{i:03d}" for i in range(30)]
    client.put("/v1/topics/news/subscribers", json={"add": members}, headers=producer)
    zones = [BERLIN, NEW_YORK, TOKYO, None]
    for i, member in enumerate(members):
        if zones[i % 4]:
            profile(member, zones[i % 4])
    schedule(
        topic="news",
        recurrence={
            "every": "daily at 09:00",
            "dtstart": "2030-06-03T00:00:00",
            "fallback_timezone": "America/Sao_Paulo",
        },
    )
    done = [
        tick(runtime, datetime(2030, 6, 2, 12, tzinfo=UTC) + timedelta(minutes=10 * i))
        for i in range(6 * 30)
    ]
    assert sum(d.requests for d in done) == 4  # one per zone, not one per subscriber
    got = received(runtime)
    assert Counter(r for r, _, _ in got) == {m: 1 for m in members}
    zone_of = {m: zones[i % 4] or "America/Sao_Paulo" for i, m in enumerate(members)}
    assert {local(at, zone_of[r]) for r, at, _ in got} == {datetime(2030, 6, 3, 9)}


def test_an_erased_recipient_gets_nothing_more_and_is_not_recreated(
    runtime, client, producer, schedule
):
    schedule(recipients=["ada", "bob"], recurrence={"every": "hourly", "timezone": "UTC"})
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    tick(runtime, first)
    assert client.delete("/v1/subscribers/bob", headers=producer).status_code == 204
    tick(runtime, first + timedelta(hours=1))
    assert Counter(r for r, _, _ in received(runtime)) == {"ada": 2}
    assert client.get("/v1/subscribers/bob", headers=producer).status_code == 404
