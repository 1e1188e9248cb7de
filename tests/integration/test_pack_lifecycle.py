"""The lifecycle pack against a real source database (its own, created and dropped here)
and Clarion's test database: right entities, exact boundaries, once and only once."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select

from clarion.db.models import Notification, RuleRun
from clarion.engine.registry import RuleError
from clarion.engine.runner import RuleDisabled, run_rule
from clarion.engine.sources import dispose_engines
from tests.conftest import PG_ADMIN
from tests.lifecycle_source import Layout, SourceDB
from tests.threads import run_concurrently

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H, D, US = timedelta(hours=1), timedelta(days=1), timedelta(microseconds=1)
SOON, BACK = 72 * H, 7 * D  # the pack's defaults
LIFECYCLE_RULES = (
    "link_expiring_soon",
    "link_expired",
    "expired_link_has_active_campaign",
    "active_link_has_expired_campaign",
    "campaign_expiring_soon",
    "campaign_expired",
    "campaign_has_expired_links",
)


@pytest.fixture(scope="module")
def source_db():
    db = SourceDB(PG_ADMIN)
    # Aware values come back in the session's zone: make it not UTC, so a missed
    # conversion shows.
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{db.name}\" SET timezone TO 'Asia/Kolkata'")
    yield db
    dispose_engines()
    db.drop()


@pytest.fixture
def source(source_db):
    source_db.reset()
    return source_db


@pytest.fixture
def lifecycle(make_runtime, source):
    """lifecycle(layout=None, **config) -> a Runtime whose lifecycle pack reads ``source``."""

    def make(layout: Layout | None = None, rules: dict | None = None, **config):
        layout = layout or source.layout
        pack = {"source_url": source.url, **layout.config(), **config}
        return make_runtime(rules={"lifecycle": pack, **(rules or {})})

    return make


def run(rt, key: str, as_of: datetime = NOW, **kwargs):
    return run_rule(key, runtime=rt, rules=rt.rules, trigger="manual", as_of=as_of, **kwargs)


def stored(rt, type: str | None = None) -> list[Notification]:
    query = select(Notification).order_by(Notification.recipient_id, Notification.dedupe_key)
    if type:
        query = query.where(Notification.type == type)
    with rt.sessions() as session:
        return list(session.scalars(query))


def ids(rows: list[Notification], field: str = "link_id") -> list:
    return sorted(row.meta[field] for row in rows)


# --- on and off --------------------------------------------------------------------------


def test_off_until_a_source_is_configured(make_runtime, source):
    rt = make_runtime()
    for key in LIFECYCLE_RULES:
        assert rt.rules.config_of(key).enabled is False
        with pytest.raises(RuleDisabled):
            run(rt, key)
    with pytest.raises(RuleError, match="needs source_url"):
        _ = make_runtime(rules={"lifecycle": {"enabled": True}}).rules
    assert (
        make_runtime(rules={"lifecycle": {"source_url": source.url}})
        .rules.config_of("campaign_expired")
        .enabled
    )


def test_a_disabled_rule_does_nothing(lifecycle, source):
    source.link(1, "alice", NOW - H)
    rt = lifecycle(rules={"link_expired": {"enabled": False}})
    with pytest.raises(RuleDisabled):
        run(rt, "link_expired")
    with rt.sessions() as session:
        assert session.scalars(select(RuleRun)).all() == []
    assert stored(rt) == []
    assert run(rt, "expired_link_has_active_campaign").error is None  # the others still run


def test_the_source_password_is_never_shown(make_runtime):
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:5432/x"
    rt = make_runtime(rules={"lifecycle": {"source_url": url}})
    shown = rt.rules.config_of("link_expired").model_dump(mode="json")
    assert "s3cret-pw" not in str(shown)
    with pytest.raises(RuleError) as caught:
        _ = make_runtime(rules={"lifecycle": {"source_url": "::s3cret-pw"}}).rules
    assert "s3cret-pw" not in str(caught.value)


# --- each rule: the right entities and only them -----------------------------------------


def test_link_expiring_soon(lifecycle, source):
    source.link(1, "alice", NOW + 2 * H, campaign_id=7)
    source.link(2, "alice", NOW + 2 * H, is_active=False)
    source.link(3, "bob", NOW + 30 * D)  # far future
    source.link(4, "bob", NOW - H)  # already expired
    source.link(5, "bob", None)  # never expires
    source.link(6, None, NOW + H)  # nobody to tell
    rt = lifecycle()
    result = run(rt, "link_expiring_soon")
    assert (result.error, result.candidates, result.created) == (None, 1, 1)
    [row] = stored(rt)
    assert (row.recipient_id, row.category, row.type, row.severity) == (
        "alice",
        "links",
        "link_expiring_soon",
        "medium",
    )
    assert row.title == "Link expires soon: https://go.example/l1"
    assert "2026-03-01 14:00 UTC" in row.body
    assert row.url == "https://go.example/l1"
    assert row.meta == {
        "link_id": 1,
        "url": "https://go.example/l1",
        "expires_at": "2026-03-01T14:00:00Z",
        "campaign_id": 7,
    }
    assert row.dedupe_key == "lifecycle:link_expiring_soon:1:2026-03-01T14:00:00Z"


def test_link_expired(lifecycle, source):
    source.link(1, "alice", NOW - 2 * H)
    source.link(2, "alice", NOW - 2 * H, is_active=False)
    source.link(3, "bob", NOW + H)
    source.link(4, "bob", NOW - 30 * D)  # before the lookback
    rt = lifecycle()
    assert run(rt, "link_expired").created == 1
    [row] = stored(rt)
    assert (row.recipient_id, row.severity, row.meta["link_id"]) == ("alice", "high", 1)
    assert row.title == "Link expired: https://go.example/l1"
    assert "expired on 2026-03-01 10:00 UTC" in row.body
    # A longer lookback reaches the old one (a one-off catch-up run).
    assert run(lifecycle(lookback_days=60), "link_expired").created == 1
    assert ids(stored(rt)) == [1, 4]


def test_expired_link_has_active_campaign(lifecycle, source):
    source.campaign(1, "carol", NOW + 10 * D, name="Spring sale")
    source.campaign(2, "carol", None)  # open-ended
    source.campaign(3, "carol", NOW + 10 * D, starts_at=NOW + 5 * D)  # not started yet
    source.campaign(4, "carol", NOW - D)  # ended
    source.campaign(5, "carol", NOW + 10 * D, is_active=False)
    source.link(1, "alice", NOW - H, campaign_id=1)
    source.link(2, "alice", NOW - H, campaign_id=2)
    source.link(3, "alice", NOW - H, campaign_id=3)
    source.link(4, "alice", NOW - H, campaign_id=4)
    source.link(5, "alice", NOW - H, campaign_id=5)
    source.link(6, "alice", NOW - H)  # no campaign
    source.link(7, "alice", NOW - H, campaign_id=1, is_active=False)
    source.link(8, "alice", NOW + H, campaign_id=1)  # not expired
    source.link(9, "alice", NOW - H, campaign_id=99)  # campaign missing
    rt = lifecycle()
    assert run(rt, "expired_link_has_active_campaign").created == 3
    rows = stored(rt)
    assert ids(rows) == [1, 2, 3]
    first = next(r for r in rows if r.meta["link_id"] == 1)
    assert (first.recipient_id, first.category, first.severity) == ("alice", "links", "high")
    assert "campaign “Spring sale” runs until 2026-03-11 12:00 UTC" in first.body
    assert first.meta["campaign_ends_at"] == "2026-03-11T12:00:00Z"
    assert first.dedupe_key.endswith(":1:2026-03-01T11:00:00Z:1")


def test_active_link_has_expired_campaign(lifecycle, source):
    source.campaign(1, "carol", NOW - D)
    source.campaign(2, "carol", NOW - 30 * D)  # ended before the lookback
    source.campaign(3, "carol", NOW - D, is_active=False)
    source.campaign(4, "carol", NOW + D)  # still running
    source.link(1, "alice", NOW + 30 * D, campaign_id=1)
    source.link(2, "bob", None, campaign_id=1)  # never expires
    source.link(3, "alice", NOW - H, campaign_id=1)  # expired too
    source.link(4, "alice", NOW + D, campaign_id=1, is_active=False)
    source.link(5, "alice", NOW + D, campaign_id=2)
    source.link(6, "alice", NOW + D, campaign_id=3)
    source.link(7, "alice", NOW + D, campaign_id=4)
    source.link(8, "alice", NOW + D)
    rt = lifecycle()
    assert run(rt, "active_link_has_expired_campaign").created == 2
    rows = stored(rt)
    assert [(r.recipient_id, r.meta["link_id"]) for r in rows] == [("alice", 1), ("bob", 2)]
    assert {(r.category, r.severity) for r in rows} == {("links", "low")}
    assert "with no expiry date" in rows[1].body


def test_campaign_expiring_soon_and_expired(lifecycle, source):
    source.campaign(1, "carol", NOW + H, name="Soon")
    source.campaign(2, "carol", NOW - H, name="Over")
    source.campaign(3, "carol", NOW + H, is_active=False)
    source.campaign(4, "carol", NOW + 30 * D)
    source.campaign(5, "carol", None)
    source.campaign(6, "carol", NOW - 30 * D)
    rt = lifecycle(campaign_page_url="https://app.example/campaigns/{id}")
    assert run(rt, "campaign_expiring_soon").created == 1
    assert run(rt, "campaign_expired").created == 1
    soon, over = stored(rt, "campaign_expiring_soon"), stored(rt, "campaign_expired")
    assert [(r.meta["campaign_id"], r.category, r.severity) for r in soon + over] == [
        (1, "campaigns", "medium"),
        (2, "campaigns", "high"),
    ]
    assert soon[0].title == "Campaign ends soon: “Soon”"
    assert over[0].body == "Campaign “Over” ended on 2026-03-01 11:00 UTC."
    assert soon[0].url == "https://app.example/campaigns/1"


def test_campaign_has_expired_links(lifecycle, source):
    source.campaign(1, "carol", NOW + 10 * D, name="Running")
    source.campaign(2, "carol", NOW - H)  # ended
    source.campaign(3, "dave", NOW + 10 * D)  # no expired link
    for link, expires, campaign in [
        (1, NOW - 2 * D, 1),
        (2, NOW - H, 1),
        (3, NOW - H, 2),
        (4, NOW + 10 * D, 3),
        (5, NOW - 30 * D, 3),
    ]:
        source.link(link, "alice", expires, campaign_id=campaign)
    rt = lifecycle()
    assert run(rt, "campaign_has_expired_links").created == 1
    [row] = stored(rt)
    assert (row.recipient_id, row.category, row.severity) == ("carol", "campaigns", "high")
    assert row.meta["expired_links"] == 2
    assert row.body == (
        "2 links of campaign “Running”, which is still active, expired between "
        "2026-02-27 12:00 UTC and 2026-03-01 11:00 UTC."
    )
    # Another expiry the same day: nothing new. One on a later day: once more.
    source.link(6, "alice", NOW + H, campaign_id=1)
    assert run(rt, "campaign_has_expired_links", NOW + 2 * H).created == 0
    source.link(7, "alice", NOW + D, campaign_id=1)
    assert run(rt, "campaign_has_expired_links", NOW + D + H).created == 1
    assert [r.meta["expired_links"] for r in stored(rt)] == [2, 4]


# --- boundaries --------------------------------------------------------------------------


def test_boundaries_are_exact(lifecycle, source):
    """soon: now < t <= now + 72 h; expired: now - 7 d < t <= now."""
    cases = {
        1: NOW + SOON,  # soon (inclusive)
        2: NOW + SOON + US,  # not yet
        3: NOW + US,  # soon
        4: NOW,  # expired, not soon
        5: NOW - BACK + US,  # expired
        6: NOW - BACK,  # out of the lookback
    }
    for link, expires in cases.items():
        source.link(link, "alice", expires)
    rt = lifecycle()
    run(rt, "link_expiring_soon")
    run(rt, "link_expired")
    assert ids(stored(rt, "link_expiring_soon")) == [1, 3]
    assert ids(stored(rt, "link_expired")) == [4, 5]


def test_naive_timestamps_in_a_source_time_zone(lifecycle, source):
    """Naive values are wall-clock times in source_timezone, across a DST change."""
    source.reset(Layout(naive=True))
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)  # 07:00 EST; New York moves to EDT on 8 Mar
    local = lambda y, mo, d, h, mi=0, us=0: datetime(y, mo, d, h, mi, 0, us)  # noqa: E731
    source.link(1, "alice", local(2026, 3, 9, 8))  # now + 72 h exactly (EDT)
    source.link(2, "alice", local(2026, 3, 9, 7, 30))  # inside: 72 h local would miss it
    source.link(3, "alice", local(2026, 3, 9, 8, us=1))  # just past the threshold
    source.link(4, "alice", local(2026, 3, 6, 7))  # exactly now: expired
    source.link(5, "alice", local(2026, 3, 6, 7, us=1))  # soon
    rt = lifecycle(source_timezone="America/New_York")
    run(rt, "link_expiring_soon", now)
    run(rt, "link_expired", now)
    soon = stored(rt, "link_expiring_soon")
    assert ids(soon) == [1, 2, 5]
    assert soon[0].meta["expires_at"] == "2026-03-09T12:00:00Z"
    assert "2026-03-09 12:00 UTC" in soon[0].body
    [expired] = stored(rt, "link_expired")
    assert expired.dedupe_key == "lifecycle:link_expired:4:2026-03-06T12:00:00Z"


# --- once and only once --------------------------------------------------------------------


def test_fires_once_across_runs_and_again_for_a_new_date(lifecycle, source):
    source.link(1, "alice", NOW + H)
    rt = lifecycle()
    assert run(rt, "link_expiring_soon").created == 1
    again = run(rt, "link_expiring_soon")
    assert (again.candidates, again.created, again.duplicates) == (1, 0, 1)
    assert run(rt, "link_expiring_soon", NOW + H / 2).created == 0
    assert run(rt, "link_expired", NOW + 2 * H).created == 1
    assert run(rt, "link_expired", NOW + 3 * D).created == 0
    # The owner extends the link: it may expire soon (and expire) again, for the new date.
    source.set_link(1, expires_at=NOW + 10 * D)
    assert run(rt, "link_expiring_soon", NOW + 3 * D).created == 0
    assert run(rt, "link_expiring_soon", NOW + 8 * D).created == 1
    assert run(rt, "link_expired", NOW + 10 * D).created == 1
    assert len(stored(rt)) == 4


def test_two_engines_at_once_create_each_notification_once(lifecycle, source):
    for link in range(1, 1201):
        source.link(link, f"owner-{link % 37}", NOW - link * timedelta(seconds=7))
    engines = [lifecycle(), lifecycle()]
    barrier, results = threading.Barrier(2), []

    def one(rt):
        barrier.wait()
        results.append(run(rt, "link_expired"))

    assert run_concurrently(one, engines) == []
    assert [r.error for r in results] == [None, None]
    assert sum(r.created for r in results) == 1200
    assert all(r.created + r.duplicates == 1200 for r in results)
    rows = stored(engines[0])
    assert len(rows) == len({(r.recipient_id, r.dedupe_key) for r in rows}) == 1200


# --- the source: names, dialects, failures -------------------------------------------------


def test_configurable_table_and_column_names(lifecycle, source):
    layout = source.reset(
        Layout(
            schema="crm data",
            links="Short Links",
            campaigns='promo"s',
            link_columns={
                "id": "Link ID",
                "owner": "owner_ref",
                "url": None,
                "expires_at": "valid until",
                "is_active": None,
                "campaign_id": "select",
            },
            campaign_columns={
                "id": "pid",
                "owner": "manager",
                "name": "Title",
                "starts_at": None,
                "ends_at": "order",
                "is_active": "live",
            },
        )
    )
    source.campaign(1, "carol", NOW + 10 * D, name="Running")
    source.campaign(2, "carol", NOW - D, name="Over")
    source.campaign(3, "carol", NOW + H, name="Soon")
    source.link(1, "alice", NOW + H)
    source.link(2, "alice", NOW - H, campaign_id=1)
    source.link(3, "alice", NOW + 10 * D, campaign_id=2)
    rt = lifecycle(layout, link_page_url="https://app.example/links/{id}?tab=expiry")
    created = {key: run(rt, key).created for key in LIFECYCLE_RULES}
    assert created == {
        "link_expiring_soon": 1,
        "link_expired": 1,
        "expired_link_has_active_campaign": 1,
        "active_link_has_expired_campaign": 1,
        "campaign_expiring_soon": 1,
        "campaign_expired": 1,
        "campaign_has_expired_links": 1,
    }
    [soon] = stored(rt, "link_expiring_soon")
    assert soon.title == "Link expires soon: link 1"
    assert soon.url == "https://app.example/links/1?tab=expiry"


def test_a_broken_source_is_recorded_and_the_other_rules_go_on(lifecycle, source):
    source.link(1, "alice", NOW + H)
    rt = lifecycle(
        rules={
            "link_expired": {"source_url": "postgresql://postgres:pw-x@127.0.0.1:1/nowhere"},
            "campaign_expired": {"campaigns_table": "no_such_table"},
        }
    )
    broken = run(rt, "link_expired")
    assert broken.error.startswith("OperationalError") and "pw-x" not in broken.error
    missing = run(rt, "campaign_expired")
    assert missing.error == "SourceError: the source database has no table 'no_such_table'"
    assert run(rt, "link_expiring_soon").created == 1
    with rt.sessions() as session:
        runs = {r.rule_key: r for r in session.scalars(select(RuleRun))}
    assert runs["link_expired"].error == broken.error
    assert runs["link_expired"].finished_at is not None
    assert runs["link_expiring_soon"].error is None


def test_a_sqlite_source(make_runtime, tmp_path):
    """A second dialect: SQLite, naive timestamps as SQLAlchemy stores them."""
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE links (id INTEGER PRIMARY KEY, owner TEXT, url TEXT,"
            " expires_at TIMESTAMP, is_active BOOLEAN, campaign_id INTEGER)"
        )
        db.execute(
            "CREATE TABLE campaigns (id INTEGER PRIMARY KEY, owner TEXT, name TEXT,"
            " starts_at TIMESTAMP, ends_at TIMESTAMP, is_active BOOLEAN)"
        )
        stamp = lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")  # noqa: E731
        rows = [
            (1, "alice", "https://go.example/a", stamp(NOW + SOON), 1, 1),
            (2, "alice", None, stamp(NOW - H), 1, 1),
            (3, "bob", None, stamp(NOW - H), 0, None),
            (4, "bob", None, stamp(NOW + SOON + US), 1, None),
        ]
        db.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute(
            "INSERT INTO campaigns VALUES (1, 'carol', 'Live', NULL, ?, 1)",
            (stamp(NOW + 10 * D),),
        )
    # A SQLite source is accepted in the embedded mode only (the demo's source).
    rt = make_runtime(mode="embedded", rules={"lifecycle": {"source_url": f"sqlite:///{path}"}})
    for key in ("link_expiring_soon", "link_expired", "campaign_has_expired_links"):
        assert run(rt, key).created == 1, key
    assert ids(stored(rt, "link_expiring_soon")) == [1]
    assert ids(stored(rt, "link_expired")) == [2]
    assert stored(rt, "campaign_has_expired_links")[0].meta["expired_links"] == 1
