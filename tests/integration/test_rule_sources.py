"""A rule's source URL names a driver the packs support: PostgreSQL through psycopg, and
SQLite only in the embedded mode. Anything else is refused by the rule API (422) and by
the settings at start, before any connection or file is made."""

from __future__ import annotations

import pytest

from clarion.engine.registry import RuleError, Rules
from tests.conftest import make_key, server_settings

REFUSED = [
    "sqlite:///{path}",
    "sqlite+pysqlite:///{path}",
    "mysql://reader:pw-9@db.internal/app",
    "postgresql+psycopg2://reader:pw-9@db.internal/app",
    "oracle+oracledb://reader:pw-9@db.internal/app",
]


def test_the_rule_api_refuses_other_drivers_and_stores_nothing(client, runtime, tmp_path):
    admin = {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}
    path = tmp_path / "made-by-a-rule.db"
    for key in ("link_expired", "traffic_spike"):  # the lifecycle and insight packs
        for url in REFUSED:
            body = {"config": {"source_url": url.format(path=path)}}
            answer = client.patch(f"/v1/rules/{key}", json=body, headers=admin)
            assert answer.status_code == 422, (key, url)
            problem = answer.json()
            assert problem["type"] == "urn:clarion:problem:invalid-rule-config"
            assert "is not supported" in problem["detail"] and "pw-9" not in answer.text
        assert client.get(f"/v1/rules/{key}", headers=admin).json()["overridden_by"] is None
    assert not path.exists()

    postgres = {"config": {"source_url": "postgresql://reader:pw-9@127.0.0.1:5432/app"}}
    assert client.patch("/v1/rules/link_expired", json=postgres, headers=admin).status_code == 200


def test_settings_with_another_driver_refuse_to_start_sqlite_only_embedded(pg_url, tmp_path):
    sqlite = {"lifecycle": {"source_url": f"sqlite:///{tmp_path / 'links.db'}"}}
    with pytest.raises(RuleError, match="driver 'sqlite' is not supported"):
        Rules(server_settings(pg_url, rules=sqlite))
    with pytest.raises(RuleError, match="driver 'mysql' is not supported"):
        Rules(server_settings(pg_url, rules={"insight": {"source_url": "mysql://h/db"}}))
    embedded = Rules(server_settings(pg_url, mode="embedded", rules=sqlite))
    assert embedded.config_of("link_expired").enabled
