"""The rule engine's framework: once-only runs, concurrency, config, errors, API, events."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from clarion.db.models import Notification, RuleRun
from clarion.engine.registry import RuleError, Rules
from clarion.engine.runner import RuleDisabled, run_rule
from clarion.workers.app import beat_schedule
from tests import engine_rules
from tests.broker import drain
from tests.conftest import make_key, process_env, server_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MODULES = {"rule_modules": ["tests.engine_rules"]}


@pytest.fixture
def rt(make_runtime):
    engine_rules.ENTITIES[:] = [
        ("inside", "ada", NOW + timedelta(hours=5)),
        ("boundary", "bob", NOW + timedelta(hours=24)),  # exactly at the threshold: fires
        ("outside", "cy", NOW + timedelta(hours=24, seconds=1)),
        ("past", "dee", NOW - timedelta(hours=1)),
    ]
    return make_runtime(**MODULES)


def notified(rt) -> list[tuple[str, str]]:
    with rt.sessions() as s:
        return sorted(s.execute(select(Notification.recipient_id, Notification.dedupe_key)).all())


def run(rt, key="test_expiring", **kw):
    return run_rule(key, runtime=rt, rules=rt.rules, trigger="manual", as_of=NOW, **kw)


def test_a_scan_rule_fires_for_the_right_entities_once_across_reruns(rt):
    first = run(rt)
    assert (first.candidates, first.created, first.duplicates, first.error) == (2, 2, 0, None)
    assert [r for r, _ in notified(rt)] == ["ada", "bob"]
    second = run(rt)
    assert (second.created, second.duplicates) == (0, 2)
    with rt.sessions() as s:
        runs = s.scalars(select(RuleRun).order_by(RuleRun.id)).all()
    assert [(r.trigger, r.created, r.duplicates) for r in runs] == [
        ("manual", 2, 0),
        ("manual", 0, 2),
    ]
    assert runs[0].as_of == NOW and runs[0].finished_at is not None


def test_two_engines_running_the_same_rule_at_once_create_each_notification_once(rt, make_runtime):
    engine_rules.ENTITIES[:] = [
        (f"e{i}", f"user-{i % 40}", NOW + timedelta(hours=1)) for i in range(400)
    ]
    other = make_runtime(**MODULES)
    start = threading.Barrier(2)
    results = []

    def engine(runtime):
        start.wait()
        results.append(run(runtime))

    threads = [threading.Thread(target=engine, args=(r,)) for r in (rt, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.created for r in results) == 400
    assert sum(r.duplicates for r in results) == 400
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Notification)) == 400


def test_the_clock_is_injectable(rt):
    later = run_rule(
        "test_expiring",
        runtime=rt,
        rules=rt.rules,
        trigger="manual",
        as_of=NOW + timedelta(hours=6),
    )
    # At 18:00 "inside" (17:00) has passed; "outside" (12:00:01 next day) is now within 24 h.
    assert [r for r, _ in notified(rt)] == ["bob", "cy"] and later.created == 2


def test_a_broken_rule_records_its_error_and_the_others_still_run(rt):
    broken = run(rt, key="test_broken")
    assert broken.error == "RuntimeError: the source is on fire"
    assert run(rt).created == 2
    with rt.sessions() as s:
        errors = dict(s.execute(select(RuleRun.rule_key, RuleRun.error)).all())
    assert errors == {"test_broken": "RuntimeError: the source is on fire", "test_expiring": None}


def test_config_comes_from_settings_per_pack_and_rule_and_is_validated(pg_url):
    settings = server_settings(
        pg_url,
        rules={"testpack": {"threshold_hours": 2}, "test_broken": {"enabled": False}},
        **MODULES,
    )
    rules = Rules(settings)
    assert rules.build("test_expiring").config.threshold_hours == 2
    assert rules.build("test_broken").config.enabled is False
    with pytest.raises(RuleError, match="test_expiring"):
        Rules(server_settings(pg_url, rules={"test_expiring": {"threshold_hours": "x"}}, **MODULES))
    with pytest.raises(RuleError, match="unknown"):
        Rules(server_settings(pg_url, rules={"nope": {}}, **MODULES))
    schedule = beat_schedule(settings)
    assert schedule["rule:test_expiring"]["schedule"] == 60
    assert "rule:test_invited" not in schedule  # event rules are not on beat


def test_dry_run_shows_what_would_be_created_and_creates_nothing(rt):
    dry = run(rt, dry_run=True)
    assert (dry.created, dry.duplicates) == (2, 0) and notified(rt) == []
    assert {p["new_recipients"][0] for p in dry.preview} == {"ada", "bob"}
    run(rt)
    assert run(rt, dry_run=True).duplicates == 2


def test_operators_disable_and_reconfigure_rules_through_the_api(rt, client):
    from fastapi.testclient import TestClient

    from clarion.api.app import create_app

    admin = {"Authorization": f"Bearer {make_key(rt, 'admin')}"}
    with TestClient(create_app(runtime=rt)) as api:
        listed = {r["key"]: r for r in api.get("/v1/rules", headers=admin).json()}
        assert listed["test_expiring"]["kind"] == "scan"
        assert listed["test_invited"]["event_type"] == "test.invited"
        bad = api.patch(
            "/v1/rules/test_expiring", json={"config": {"threshold_hours": "x"}}, headers=admin
        )
        assert bad.status_code == 422 and "test_expiring" in bad.json()["detail"]
        off = api.patch("/v1/rules/test_expiring", json={"enabled": False}, headers=admin)
        assert off.json()["enabled"] is False
        with pytest.raises(RuleDisabled):
            run(rt)
        assert api.post("/v1/rules/test_expiring/run", headers=admin).status_code == 409

        api.patch(
            "/v1/rules/test_expiring",
            json={"enabled": True, "config": {"threshold_hours": 6}},
            headers=admin,
        )
        dry = api.post(
            "/v1/rules/test_expiring/run?dry_run=true&as_of=2026-11-22T12:00:00Z", headers=admin
        )
        assert dry.status_code == 200 and dry.json()["would_create"] == 1  # only "inside" now
        assert (
            api.post(
                "/v1/rules/test_expiring/run?as_of=2026-11-22T12:00:00Z", headers=admin
            ).status_code
            == 202
        )
        drain(rt.celery)
        assert [r for r, _ in notified(rt)] == ["ada"]
        runs = api.get("/v1/rules/test_expiring/runs", headers=admin).json()
        assert [r["trigger"] for r in runs] == ["manual", "dry-run"]
        assert api.get("/v1/rules/nope", headers=admin).status_code == 404
        assert (
            api.get(
                "/v1/rules", headers={"Authorization": f"Bearer {make_key(rt, 'notify')}"}
            ).status_code
            == 403
        )


def test_events_run_their_event_rules_end_to_end_and_a_resend_creates_nothing(rt, producer):
    from fastapi.testclient import TestClient

    from clarion.api.app import create_app

    event = {
        "id": str(uuid.uuid4()),
        "type": "test.invited",
        "actor": "ada",
        "data": {"invitee": "zed"},
    }
    with TestClient(create_app(runtime=rt)) as api:
        assert api.post("/v1/events", json=event, headers=producer).status_code == 202
        assert api.post("/v1/events", json=event, headers=producer).status_code == 202  # resent
        assert (
            api.post("/v1/events", json={"type": "bad type!"}, headers=producer).status_code == 422
        )
        assert api.post("/v1/events", json={"type": "x", "data": {}}).status_code == 401
    drain(rt.celery)
    assert notified(rt) == [("zed", f"test_invited:{event['id']}")]
    with rt.sessions() as s:
        triggers = s.scalars(select(RuleRun.trigger)).all()
    assert triggers == ["event", "event"]


def test_a_producers_package_ships_rules_through_the_clarion_rules_entry_point(
    pg_url, tmp_path, monkeypatch
):
    dist = tmp_path / "acme_rules-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rules\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[clarion.rules]\nacme = tests.engine_rules\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = Rules(server_settings(pg_url))  # no CLARION_RULE_MODULES: found by entry point
    assert {"test_expiring", "test_broken", "test_invited"} <= set(rules.classes)


def test_the_cli_lists_and_dry_runs_rules(rt):
    from tests.e2e.procs import run as cli

    env = process_env(rt.settings.database_url, CLARION_RULE_MODULES='["tests.engine_rules"]')
    listed = cli(["rules", "list"], env)
    assert "test_expiring\ttestpack\ton\tevery 60s" in listed
    assert "test_invited\ttestpack\ton\tevent test.invited" in listed
    dry = cli(["rules", "dry-run", "test_expiring", "--as-of", NOW.isoformat()], env)
    assert '"trigger": "dry-run"' in dry and '"error": null' in dry
