"""The metrics tests' tools: scraping a real process's Prometheus endpoint, and the
metric names the shipped dashboard and alert rules use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "clarion.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
_NAME = re.compile(r"\bclarion_[a-z0-9_]+")


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"]]


def referenced_metrics() -> set[str]:
    """Every series name (``_bucket``, ``_total``…) the dashboard and the alerts query."""
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    return {name for expr in exprs for name in _NAME.findall(expr)}


class Scrape:
    """One scrape: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    @classmethod
    def of(cls, url: str, token: str | None = None) -> Scrape:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.get(url, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return cls(answer.text)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(have.get(k) == want for k, want in labels.items())
            for n, have, _ in self.samples
        )

    @property
    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}

    def label_values(self) -> set[str]:
        return {v for _, labels, _ in self.samples for v in labels.values()}
