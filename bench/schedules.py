"""Recurring schedules: what one beat tick costs (``clarion.core.recurring.run``).

Run from the repository root (PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python -m bench.schedules                   # 10,000 schedules; 100,000 in 30 zones
    .venv/bin/python -m bench.schedules --schedules 2000 --subscribers 20000   # quick

The tick runs in this process against a fresh database ``clarion_bench_schedules`` and
publishes to the real Redis broker (database 12, flushed; ``CLARION_BENCH_REDIS`` points
elsewhere). Time is injected, so every tick is exactly the one wanted.

1. **10,000 schedules**, one recipient each, "daily at 09:00" on each recipient's clock,
   the recipients spread over 30 zones. Ticks: the first (each schedule groups its
   recipients by zone and stores its state), an idle one (nothing due), the probe 14 h
   before 09:00 (all group again), and each zone's 09:00 (~333 due, one request each).
   Then the same 10,000 on one fixed zone, all due in one tick (the worst case).
2. **One schedule to a topic of 100,000 subscribers in 30 zones** (timezones set, by
   COPY). Ticks: the probe (one GROUP BY over the topic), a zone's 09:00 (one fan-out
   message), an idle one; and the fan-out walk of one zone (what a bulk worker then does:
   pages of that zone's subscribers; the create tasks are not run).

Baselines in the same run: an empty transaction doing the due query by hand (the floor of
an idle tick), and the probe's GROUP BY as plain SQL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import _common as common

DATABASE = "clarion_bench_schedules"
DAY = datetime(2030, 6, 3)
ZONES = [
    "Pacific/Kiritimati", "Pacific/Auckland", "Australia/Sydney", "Asia/Tokyo", "Asia/Seoul",
    "Asia/Shanghai", "Asia/Singapore", "Asia/Bangkok", "Asia/Kolkata", "Asia/Karachi",
    "Asia/Dubai", "Europe/Moscow", "Europe/Istanbul", "Africa/Cairo", "Europe/Athens",
    "Europe/Berlin", "Europe/Paris", "Africa/Lagos", "Europe/London", "Atlantic/Azores",
    "America/Noronha", "America/Sao_Paulo", "America/Halifax", "America/New_York",
    "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Anchorage",
    "Pacific/Honolulu", "Pacific/Pago_Pago",
]  # fmt: skip


def timed(func) -> tuple[float, object]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def median_of(func, rounds: int) -> float:
    return statistics.median(timed(func)[0] for _ in range(rounds))


def load_subscribers(database: str, ids: list[str], topic: str | None) -> None:
    with psycopg.connect(common.pg_url(database)) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY subscribers (id, timezone, data, seq, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i, sid in enumerate(ids):
                copy.write_row((sid, ZONES[i % len(ZONES)], "{}", 0, DAY, DAY))
        if topic:
            cur.execute("INSERT INTO topics VALUES (%s, %s)", (topic, DAY))
            with cur.copy("COPY topic_subscribers FROM STDIN") as copy:
                for sid in ids:
                    copy.write_row((topic, sid, DAY))
        cur.execute("ANALYZE subscribers")
        cur.execute("ANALYZE topic_subscribers")


def add_schedules(rt, count: int, timezone: str, recipients=None, topic=None) -> None:
    from sqlalchemy import delete, insert

    from clarion.api.schedule_schemas import ScheduleCreate
    from clarion.api.schedules import _definition, _restart
    from clarion.db.models import Schedule
    from clarion.db.session import transaction
    from clarion.ids import new_id

    anchor = DAY.replace(tzinfo=UTC) - timedelta(days=1)
    rows = []
    for i in range(count):
        body = ScheduleCreate.model_validate(
            {
                "recipients": [recipients[i]] if recipients else None,
                "topic": topic,
                "category": "reminders",
                "title": "Daily review",
                "recurrence": {
                    "every": "daily at 09:00",
                    "dtstart": DAY.isoformat(),
                    "timezone": timezone,
                },
            }
        )
        rows.append(
            {
                "id": new_id(),
                "created_by": "bench",
                **_definition(body, anchor),
                **_restart(anchor),
                "created_at": anchor,
                "updated_at": anchor,
            }
        )
    with transaction(rt.sessions) as session:
        session.execute(delete(Schedule))
        for start in range(0, len(rows), 2000):
            session.execute(insert(Schedule), rows[start : start + 2000])


def tick(rt, now: datetime):
    from clarion.core import enqueue, recurring

    published = []

    def publish(messages):
        published.extend(messages)
        enqueue.enqueue(rt.celery, *messages)

    done = recurring.run(sessions=rt.sessions, settings=rt.settings, publish=publish, now=now)
    return done


def floor_tick(database: str) -> float:
    """The due query alone, by hand, in its own transaction (an idle tick's floor)."""
    with psycopg.connect(common.pg_url(database)) as conn:

        def once():
            with conn.transaction():
                conn.execute(
                    "SELECT * FROM schedules WHERE next_at IS NOT NULL AND next_at <= %s"
                    " ORDER BY next_at LIMIT 200 FOR UPDATE SKIP LOCKED",
                    (DAY.replace(tzinfo=UTC) - timedelta(days=2),),
                ).fetchall()

        return median_of(once, 50)


def report(name: str, seconds: float, done=None, per: int | None = None) -> None:
    extra = ""
    if done is not None:
        extra = f"  schedules {done.schedules:>6}  requests {done.requests:>6}"
    if per:
        extra += f"  ({seconds / per * 1e6:.0f} µs per schedule)"
    print(f"  {name:<44} {seconds * 1000:9.1f} ms{extra}", flush=True)


def many_schedules(rt, database: str, count: int) -> None:
    from clarion.core.recurrence import instant
    from clarion.core.wallclock import zone_of

    print(f"\n{count:,} schedules, one recipient each, daily at 09:00 on their own clock")
    ids = [f"s{i:06d}" for i in range(count)]
    load_subscribers(database, ids, topic=None)
    add_schedules(rt, count, "subscriber", recipients=ids)
    first = DAY.replace(tzinfo=UTC) - timedelta(days=1)
    report("first tick (group by zone, store state)", *timed(lambda: tick(rt, first)), count)
    idle = first + timedelta(hours=1)
    report("idle tick (nothing due), median of 50", median_of(lambda: tick(rt, idle), 50))
    report("  baseline: the due query by hand", floor_tick(database))
    probe = DAY.replace(hour=9, tzinfo=UTC) - timedelta(hours=14)
    report("probe tick (all group again, 14 h ahead)", *timed(lambda: tick(rt, probe)), count)
    fired = sorted(instant(DAY.replace(hour=9), zone_of(z)) for z in ZONES)
    costs = [timed(lambda at=at: tick(rt, at)) for at in fired]
    worst = max(costs, key=lambda c: c[0])
    typical = statistics.median(c[0] for c in costs)
    report("a zone's 09:00, median of the 30 ticks", typical)
    report("  the slowest (it holds the next day's probe)", worst[0], worst[1])
    sent = sum(d.requests for _, d in costs)
    print(f"  {'requests over the 30 zone ticks':<44} {sent:>9}")
    add_schedules(rt, count, "UTC", recipients=ids)
    tick(rt, first)
    nine = DAY.replace(hour=9, tzinfo=UTC)
    report("fixed zone: all due in one tick", *timed(lambda: tick(rt, nine)), count)


def one_big_topic(rt, database: str, subscribers: int) -> None:
    from clarion.core import fanout
    from clarion.core.recurrence import instant
    from clarion.core.wallclock import zone_of

    print(f"\n1 schedule to a topic of {subscribers:,} subscribers in {len(ZONES)} zones")
    ids = [f"t{i:07d}" for i in range(subscribers)]
    load_subscribers(database, ids, topic="everyone")
    add_schedules(rt, 1, "subscriber", topic="everyone")
    first = DAY.replace(tzinfo=UTC) - timedelta(days=1)
    report("first tick (one GROUP BY over the topic)", *timed(lambda: tick(rt, first)))
    with psycopg.connect(common.pg_url(database)) as conn:
        sql = (
            "SELECT coalesce(s.timezone, ''), count(*) FROM topic_subscribers ts JOIN"
            " subscribers s ON s.id = ts.subscriber_id WHERE ts.topic_key = 'everyone'"
            " GROUP BY 1"
        )
        report(
            "  baseline: that GROUP BY by hand", median_of(lambda: conn.execute(sql).fetchall(), 5)
        )
    idle = first + timedelta(hours=1)
    report("idle tick, median of 50", median_of(lambda: tick(rt, idle), 50))
    probe = DAY.replace(hour=9, tzinfo=UTC) - timedelta(hours=14)
    report("probe tick (GROUP BY again)", *timed(lambda: tick(rt, probe)))
    fired = sorted({instant(DAY.replace(hour=9), zone_of(z)) for z in ZONES})
    costs = [timed(lambda at=at: tick(rt, at)) for at in fired]
    report("a zone's 09:00 (one fan-out), median of ticks", statistics.median(c[0] for c in costs))
    print(f"  {'fan-out messages over those ticks':<44} {sum(d.requests for _, d in costs):>9}")
    berlin = instant(DAY.replace(hour=9), zone_of("Europe/Berlin"))
    from clarion.core.schemas import FanoutMessage

    message = FanoutMessage.model_validate(common_fanout_message(rt, "Europe/Berlin", berlin))
    walked = []
    seconds, result = timed(
        lambda: fanout.fan_out(
            message, sessions=rt.sessions, settings=rt.settings, publish=walked.append
        )
    )
    report(f"  the zone's fan-out walk ({result.recipients:,} recipients)", seconds)


def common_fanout_message(rt, zone: str, at: datetime) -> dict:
    from clarion.ids import new_id

    return {
        "request_id": str(new_id()),
        "accepted_at": at.isoformat(),
        "topic": "everyone",
        "zone": zone,
        "content": {"category": "reminders", "title": "Daily review"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=100_000)
    args = parser.parse_args()
    common.fresh_run(DATABASE, "WARNING")
    from clarion.runtime import Runtime
    from clarion.settings import Settings

    rt = Runtime(Settings())
    try:
        many_schedules(rt, DATABASE, args.schedules)
        common.flush_redis()
        one_big_topic(rt, DATABASE, args.subscribers)
    finally:
        common.flush_redis()
        rt.close()


if __name__ == "__main__":
    main()
