"""The shipped Grafana dashboard and Prometheus alert rules: well-formed, equivalent to the
system pack's alarms, and querying only metrics Clarion exports. (tests/e2e/test_metrics.py
checks the same names against what real processes answer to a scrape.)"""

from __future__ import annotations

import json
import subprocess

from prometheus_client.metrics import MetricWrapperBase

from clarion import metrics
from clarion.engine.packs import system
from clarion.runtime import Runtime
from clarion.workers.queue_metrics import QueueCollector
from tests.monitoring import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    alert_rules,
    dashboard_exprs,
    referenced_metrics,
)

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def declared() -> set[str]:
    """The series names of every metric clarion.metrics defines."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + s for s in SUFFIXES[family.type]}
    return names


def test_the_dashboard_is_a_grafana_dashboard_of_prometheus_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "clarion" and dashboard["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("queue", "latency", "rule", "live connections", "429", "dead letters"):
        assert subject in titles, subject


def test_every_alarm_of_the_system_pack_has_an_alert_rule():
    rules = alert_rules()
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in rules)
    assert all(r["annotations"]["summary"] and r["annotations"]["description"] for r in rules)
    covered = {r["labels"].get("system_rule") for r in rules} - {None}
    # high_load watches the host (load per core): node_exporter's job in a Prometheus stack.
    assert covered == {rule.key for rule in system.RULES} - {"high_load"}


def test_dashboard_and_alerts_query_only_metrics_clarion_exports(settings, redis_client):
    app = Runtime(settings).celery
    families = list(QueueCollector(app).collect())  # read from the real test broker
    queue_names = {s.name for f in families for s in f.samples}
    assert "clarion_queue_messages" in queue_names
    exported = declared() | queue_names
    missing = referenced_metrics() - exported
    assert not missing, f"the deploy files query metrics nobody exports: {sorted(missing)}"
    assert len(referenced_metrics()) >= 20


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            ["promtool", *args],
            cwd=DEPLOY / "prometheus",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_expressions_parse_as_balanced_promql():
    """Beside promtool: every bracket closes and every name is ours."""
    for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()]:
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), expr
