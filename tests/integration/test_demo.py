"""The demo data makes every built-in lifecycle, insight and activities rule fire."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from clarion import demo
from clarion.db.models import Notification
from clarion.engine.events import ingest
from clarion.engine.runner import RuleDisabled, run_rule

USER = "dev-user"


def test_the_demo_seed_makes_every_content_rule_fire(make_runtime, tmp_path):
    # The demo is `clarion dev --demo`: the embedded mode, the one accepting a SQLite source.
    rt = make_runtime(mode="embedded", rules=demo.rules_config(tmp_path, USER))
    events = demo.seed(tmp_path, rt.sessions, USER)
    errors = {}
    for key, cls in rt.rules.classes.items():
        if cls.event_type:
            continue
        try:
            result = run_rule(key, runtime=rt, rules=rt.rules, trigger="manual")
        except RuleDisabled:
            continue
        if result.error:
            errors[key] = result.error
    for event in events:
        ingest(event, runtime=rt, rules=rt.rules)
    assert errors == {}
    with rt.sessions() as s:
        fired = Counter(
            s.scalars(select(Notification.type).where(Notification.recipient_id == USER))
        )
    expected = {
        "link_expiring_soon",
        "link_expired",
        "expired_link_has_active_campaign",
        "active_link_has_expired_campaign",
        "campaign_expiring_soon",
        "campaign_expired",
        "campaign_has_expired_links",
        "traffic_spike",
        "new_country_discovered",
        "unusual_device_distribution",
        "conversion_rate_anomaly",
        "member_invited",
        "new_signup",
        "integration_connected",
        "integration_failing",
        "high_load",
    }
    assert expected - set(fired) == set()


def test_the_demo_schedule_reminds_the_dev_user_every_minute(make_runtime, tmp_path):
    from datetime import timedelta

    from clarion.core import enqueue, recurring
    from clarion.ids import utcnow
    from tests.broker import drain

    rt = make_runtime()
    demo.seed_schedule(rt, USER)
    demo.seed_schedule(rt, USER)  # a restart replaces it
    start = utcnow()
    for minutes in (1, 2, 3):
        recurring.run(
            sessions=rt.sessions,
            settings=rt.settings,
            publish=lambda m: enqueue.enqueue(rt.celery, *m),
            now=start + timedelta(minutes=minutes),
        )
        drain(rt.celery)
    with rt.sessions() as s:
        rows = s.execute(
            select(Notification.type, Notification.deleted_at).where(
                Notification.recipient_id == USER
            )
        ).all()
    assert [t for t, _ in rows] == ["demo_recurring"] * 3
    assert sum(deleted is None for _, deleted in rows) == 1  # each replaced the last
