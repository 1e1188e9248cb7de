"""The insight pack on real PostgreSQL: each rule fires for the right subject, once per
window, and never for the quiet ones (thresholds, minimum volumes, the nightly dip)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from clarion.db.models import Event, Notification
from clarion.engine.registry import RuleError, Rules
from clarion.engine.runner import run_rule
from tests.conftest import server_settings

HOUR, DAY, WEEK = timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)
# A Wednesday; the last complete hour is 13:00-14:00, the last complete day the 24th.
NOW = datetime(2026, 11, 25, 14, 20, tzinfo=UTC)
LAST_HOUR = datetime(2026, 11, 25, 13, tzinfo=UTC)
LAST_DAY = datetime(2026, 11, 24, tzinfo=UTC)
OFF = {"enabled": False}


def visits(subject, start, n, *, owner=None, kind="visit", span=HOUR, **data):
    """n events of one subject spread evenly over [start, start + span)."""
    data = {"country": "US", "device": "desktop", **data, **({"owner": owner} if owner else {})}
    return [
        {
            "id": uuid.uuid4(),
            "type": kind,
            "subject": subject,
            "actor": None,
            "data": data,
            "occurred_at": start + span * i / n,
            "received_at": start + span * i / n,
        }
        for i in range(n)
    ]


def insert(rt, *batches):
    rows = [row for batch in batches for row in batch]
    with rt.engine.begin() as conn:
        conn.execute(sa.insert(Event), rows)


def run(rt, key, as_of=NOW):
    result = run_rule(key, runtime=rt, rules=rt.rules, trigger="manual", as_of=as_of)
    assert result.error is None, result.error
    return result


def notified(rt, type_=None):
    query = select(Notification).order_by(Notification.recipient_id, Notification.dedupe_key)
    if type_:
        query = query.where(Notification.type == type_)
    with rt.sessions() as s:
        return list(s.scalars(query))


def seasonal(subject, counts, owner, at=LAST_HOUR, **data):
    """counts[0] in the hour at `at`, counts[k] in the same hour k weeks earlier."""
    return [
        row
        for k, n in enumerate(counts)
        for row in visits(subject, at - k * WEEK, n, owner=owner, **data)
    ]


def test_traffic_spike_fires_for_the_spiking_subject_once_per_hour(make_runtime):
    rt = make_runtime(rules={"insight": {"recipients": ["analyst"]}})
    insert(
        rt,
        seasonal("link-hot", [300, 100, 110, 95, 105], "ada"),
        seasonal("link-steady", [120, 100, 110, 95, 105], "bob"),
        seasonal("link-young", [300, 100, 0, 0, 0], "cy"),  # two weeks old: no baseline yet
        seasonal("link-quiet", [25, 3, 4, 2, 5], "dee"),  # x6, but under min_count (30)
        visits("link-hot", LAST_HOUR - DAY, 500, owner="ada"),  # yesterday: not a season
    )

    first = run(rt, "traffic_spike")

    rows = notified(rt)
    assert [(n.recipient_id, n.type) for n in rows] == [
        ("ada", "traffic_spike"),
        ("analyst", "traffic_spike"),
    ]
    n = rows[0]
    assert (n.category, n.severity) == ("insight", "medium")
    assert n.dedupe_key == "insight:traffic_spike:link-hot:20261125T1400Z"
    assert n.meta["observed"] == 300 and n.meta["baseline"]["median"] == 102.5
    assert n.meta["baseline"]["history"] == [100, 110, 95, 105]
    assert n.meta["score"] > 4.5 and n.meta["threshold"] == 4.5
    assert n.meta["window"] == {
        "start": "2026-11-25T13:00:00+00:00",
        "end": "2026-11-25T14:00:00+00:00",
    }
    assert "300 visits between 13:00 and 14:00 UTC on 2026-11-25" in n.body
    assert "102.5" in n.body and "100, 110, 95, 105" in n.body
    assert (first.created, first.duplicates) == (2, 0)
    # Every run in the next hour looks at the same window: nothing new.
    for later in (NOW, NOW + timedelta(minutes=39)):
        again = run(rt, "traffic_spike", as_of=later)
        assert (again.created, again.duplicates) == (0, 2)
    # The next window has no spike (and no data): nothing.
    assert run(rt, "traffic_spike", as_of=NOW + HOUR).candidates == 0
    assert len(notified(rt)) == 2
    assert run(rt, "traffic_drop").candidates == 0


def test_the_spike_and_drop_thresholds_are_inclusive(make_runtime):
    # MAD 0: the scale is sqrt(100 * (1 + pi/8)) = 11.80; z=4 puts the edge at 147.2.
    thresholds = {"z": 4, "min_change": 0.3, "min_count": 20}
    rt = make_runtime(rules={"traffic_spike": thresholds, "traffic_drop": thresholds})
    insert(
        rt,
        seasonal("edge-in", [148, 100, 100, 100, 100], "ada"),
        seasonal("edge-out", [147, 100, 100, 100, 100], "bob"),
        seasonal("low-in", [52, 100, 100, 100, 100], "cy"),
        seasonal("low-out", [53, 100, 100, 100, 100], "dee"),
    )

    run(rt, "traffic_spike")
    run(rt, "traffic_drop")

    assert [(n.recipient_id, n.type, n.severity) for n in notified(rt)] == [
        ("ada", "traffic_spike", "medium"),
        ("cy", "traffic_drop", "high"),
    ]


def test_a_feed_that_stopped_is_not_a_drop_of_every_subject(make_runtime):
    rt = make_runtime()
    insert(
        rt,
        seasonal("link-a", [0, 100, 100, 100, 100], "ada"),
        seasonal("link-b", [0, 90, 100, 80, 100], "bob"),
    )
    assert run(rt, "traffic_drop").candidates == 0
    insert(rt, visits("link-b", LAST_HOUR, 95, owner="bob"))  # the feed is alive after all
    assert [n.recipient_id for n in notified(rt)] == []
    run(rt, "traffic_drop")
    assert [(n.recipient_id, n.meta["observed"]) for n in notified(rt)] == [("ada", 0)]


def weekly_shape(subject, owner, start, end):
    """Hourly visits: 80 on weekday daytime, half at the weekend, 4 at night; a little
    week-to-week variation so the history is not flat."""
    rows, at = [], start
    while at < end:
        day, hour, week = at.weekday(), at.hour, (at - start).days // 7
        base = 4 if hour < 6 or hour >= 22 else (80 if day < 5 else 40)
        rows += visits(subject, at, max(1, round(base * (1 + 0.05 * (week % 3 - 1)))), owner=owner)
        at += HOUR
    return rows


def test_nights_and_weekends_never_fire_but_a_real_drop_does(make_runtime):
    rt = make_runtime()
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    insert(rt, weekly_shape("link-daily", "ada", monday - 30 * DAY, monday + 14 * HOUR))

    # Every hour of Saturday, Sunday and Monday morning, as beat would run them.
    for hours in range(-48, 15):
        as_of = monday + hours * HOUR + timedelta(minutes=5)
        assert run(rt, "traffic_drop", as_of=as_of).candidates == 0, as_of
        assert run(rt, "traffic_spike", as_of=as_of).candidates == 0, as_of

    with rt.engine.begin() as conn:  # Monday 13:00-14:00 collapses to 10 visits
        hour = (Event.occurred_at >= monday + 13 * HOUR) & (Event.occurred_at < monday + 14 * HOUR)
        ids = conn.scalars(select(Event.id).where(hour).offset(10)).all()
        conn.execute(sa.delete(Event).where(Event.id.in_(ids)))
    result = run(rt, "traffic_drop", as_of=monday + 14 * HOUR + timedelta(minutes=5))

    assert result.created == 1
    (n,) = notified(rt)
    assert (n.recipient_id, n.type, n.severity) == ("ada", "traffic_drop", "high")
    assert n.meta["observed"] == 10 and n.meta["baseline"]["median"] >= 76
    assert n.title == "Traffic drop on link-daily: 10 visits"


def test_new_country_discovered(make_runtime):
    rt = make_runtime()
    history = NOW - 20 * DAY
    insert(
        rt,
        visits("link-a", history, 40, owner="ada", span=10 * DAY),
        visits("link-a", history, 20, owner="ada", span=10 * DAY, country="DE"),
        visits("link-a", LAST_HOUR, 3, owner="ada"),
        visits("link-a", LAST_HOUR, 2, owner="ada", country="FR"),
        visits("link-a", LAST_HOUR, 1, owner="ada", country="BR"),
        visits("link-b", history, 60, owner="bob", span=10 * DAY, country="FR"),
        visits("link-b", LAST_HOUR, 5, owner="bob", country="FR"),  # seen before
        visits("link-new", LAST_HOUR, 5, owner="cy", country="JP"),  # no history: not news
        visits("link-c", NOW - 40 * DAY, 60, owner="dee", span=5 * DAY, country="NZ"),
        visits("link-c", history, 60, owner="dee", span=5 * DAY),
        visits("link-c", LAST_HOUR - HOUR, 1, owner="dee", country="IT"),  # the hour before
        visits("link-c", LAST_HOUR, 2, owner="dee", country="NZ"),  # 40 days ago: new again
    )

    first = run(rt, "new_country_discovered")
    again = run(rt, "new_country_discovered", as_of=NOW + timedelta(minutes=30))
    next_hour = run(rt, "new_country_discovered", as_of=NOW + HOUR)

    rows = notified(rt)
    assert [(n.recipient_id, n.meta["countries"]) for n in rows] == [
        ("ada", {"FR": 2, "BR": 1}),
        ("dee", {"NZ": 2}),
    ]
    assert rows[0].title == "New countries for link-a: FR, BR"
    assert rows[0].meta["baseline"] == {"visits": 60, "countries": 2}
    assert rows[0].severity == "low"
    assert (first.created, again.created, again.duplicates, next_hour.candidates) == (2, 0, 2, 0)


def test_unusual_device_distribution(make_runtime):
    rt = make_runtime()
    base = LAST_DAY - 28 * DAY

    def mix(subject, owner, start, span, mobile, desktop):
        return visits(subject, start, mobile, owner=owner, span=span, device="mobile") + visits(
            subject, start, desktop, owner=owner, span=span, device="desktop"
        )

    insert(
        rt,
        mix("link-a", "ada", base, 28 * DAY, 360, 240),
        mix("link-a", "ada", LAST_DAY, DAY, 180, 20),  # 60/40 → 90/10
        mix("link-b", "bob", base, 28 * DAY, 360, 240),
        mix("link-b", "bob", LAST_DAY, DAY, 124, 76),  # 62/38: the usual
        mix("link-c", "cy", base, 28 * DAY, 360, 240),
        mix("link-c", "cy", LAST_DAY, DAY, 50, 0),  # all mobile, but 50 < min_count
        mix("link-d", "dee", base, 28 * DAY, 100, 100),  # baseline under min_baseline
        mix("link-d", "dee", LAST_DAY, DAY, 200, 0),
    )

    run(rt, "unusual_device_distribution")
    later_that_day = run(rt, "unusual_device_distribution", as_of=NOW + 5 * HOUR)

    (n,) = notified(rt)
    assert (n.recipient_id, n.type, n.severity) == ("ada", "unusual_device_distribution", "medium")
    assert n.meta["observed"] == {"visits": 200, "shares": {"desktop": 0.1, "mobile": 0.9}}
    assert n.meta["baseline"] == {"visits": 600, "shares": {"desktop": 0.4, "mobile": 0.6}}
    assert n.meta["score"] == pytest.approx(0.0913, abs=1e-3)
    assert n.meta["total_variation"] == pytest.approx(0.3)
    assert n.dedupe_key == "insight:unusual_device_distribution:link-a:20261125T0000Z"
    assert n.title == "Unusual device mix on link-a: mobile 90% (usually 60%)"
    assert "on 2026-11-24" in n.body and "mobile 90% (usually 60%)" in n.body
    assert (later_that_day.created, later_that_day.duplicates) == (0, 1)


def test_conversion_rate_anomaly(make_runtime):
    rt = make_runtime(rules={"conversion_rate_anomaly": {"z": 3}})
    base = LAST_DAY - 28 * DAY

    def traffic(subject, owner, start, span, n_visits, n_conv):
        return visits(subject, start, n_visits, owner=owner, span=span) + visits(
            subject, start, n_conv, owner=owner, span=span, kind="conversion"
        )

    insert(
        rt,
        traffic("link-a", "ada", base, 28 * DAY, 2000, 200),
        traffic("link-a", "ada", LAST_DAY, DAY, 400, 20),  # 10 % → 5 %: z = -3.16
        traffic("link-b", "bob", base, 28 * DAY, 2000, 200),
        traffic("link-b", "bob", LAST_DAY, DAY, 400, 22),  # 5.5 %: z = -2.9, under 3
        traffic("link-c", "cy", base, 28 * DAY, 2000, 200),
        traffic("link-c", "cy", LAST_DAY, DAY, 400, 80),  # 20 %: a rise
        traffic("link-d", "dee", base, 28 * DAY, 2000, 200),
        traffic("link-d", "dee", LAST_DAY, DAY, 150, 0),  # under min_visits
    )

    run(rt, "conversion_rate_anomaly")
    run(rt, "conversion_rate_anomaly")

    rows = notified(rt)
    assert [(n.recipient_id, n.severity) for n in rows] == [("ada", "high"), ("cy", "medium")]
    drop = rows[0]
    assert drop.title == "Conversion rate dropped on link-a: 5.0% (usually 10.0%)"
    assert drop.meta["observed"] == {"visits": 400, "conversions": 20, "rate": 0.05}
    assert drop.meta["baseline"] == {"visits": 2000, "conversions": 200, "rate": 0.1}
    assert drop.meta["score"] == pytest.approx(-3.16, abs=0.01)
    assert rows[1].title.startswith("Conversion rate rose on link-c")


def test_a_separate_source_table_with_its_own_columns(make_runtime, pg_url, tmp_path):
    """Another database (here: a table in the test database reached by URL, and a SQLite
    file) with plain columns, no kind column, a JSON dimension and a fixed recipient."""
    sqlite_url = f"sqlite:///{tmp_path / 'analytics.db'}"
    meta = sa.MetaData()
    clicks = sa.Table(
        "clicks_insight_test",
        meta,
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("link_id", sa.String),
        sa.Column("owner_id", sa.String),
        sa.Column("geo", sa.JSON),
    )
    rows = [
        {"at": e["occurred_at"], "link_id": e["subject"], "owner_id": "ada", "geo": {"cc": c}}
        for c, start, n in (("US", NOW - 10 * DAY, 60), ("SE", LAST_HOUR, 4))
        for e in visits("link-x", start, n, span=HOUR)
    ]
    source = {
        "table": "clicks_insight_test",
        "time_column": "at",
        "subject_column": "link_id",
        "kind_column": None,
        "owner_column": "owner_id",
        "country_column": "geo.cc",
        "recipients": ["analyst"],
        "url_template": "https://app.test/links/{subject}",
    }
    for url in (pg_url, sqlite_url):
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        meta.create_all(engine)
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(clicks), rows)
            rules = {"insight": {**source, "source_url": url}, "conversion_rate_anomaly": OFF}
            rt = make_runtime(mode="embedded", rules=rules)  # SQLite: embedded mode only
            run(rt, "new_country_discovered")
            found = notified(rt)
            assert [(n.recipient_id, n.meta["countries"]) for n in found] == [
                ("ada", {"SE": 4}),
                ("analyst", {"SE": 4}),
            ], url
            assert found[0].url == "https://app.test/links/link-x"
            with rt.engine.begin() as conn:
                conn.execute(sa.delete(Notification))
        finally:
            meta.drop_all(engine)
            engine.dispose()


def test_config_errors_name_the_rule(pg_url):
    with pytest.raises(RuleError, match="new_country_discovered(.|\n)*Extra inputs"):
        Rules(server_settings(pg_url, rules={"insight": {"z": 5}}))  # a threshold in the pack
    with pytest.raises(RuleError, match="conversion_rate_anomaly"):
        Rules(server_settings(pg_url, rules={"insight": {"kind_column": None}}))
    with pytest.raises(RuleError, match="owner_column or recipients"):
        Rules(server_settings(pg_url, rules={"insight": {"owner_column": None}}))
    ok = Rules(
        server_settings(
            pg_url,
            rules={
                "insight": {"kind_column": None},
                "conversion_rate_anomaly": OFF,
                "traffic_spike": {"z": 5, "season_seconds": 86400, "seasons": 14},
            },
        )
    )
    assert ok.build("traffic_spike").config.z == 5
    # The source URL's password appears neither in errors nor in the config the API shows.
    secret = "postgresql://reader:hunter2@db.internal/analytics"
    with pytest.raises(RuleError) as caught:
        Rules(server_settings(pg_url, rules={"insight": {"source_url": secret, "table": "a b"}}))
    assert "hunter2" not in str(caught.value)
    with pytest.raises(RuleError, match="not a database URL") as caught:
        Rules(server_settings(pg_url, rules={"insight": {"source_url": "hunter2 nonsense"}}))
    assert "hunter2" not in str(caught.value)
    shown = Rules(server_settings(pg_url, rules={"insight": {"source_url": secret}}))
    assert "hunter2" not in str(shown.build("traffic_drop").config.model_dump(mode="json"))
