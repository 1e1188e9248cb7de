"""The embedded mode (``clarion dev``: SQLite, no Redis) counts its limits in memory: the
same 429s, and the throttle, without a Redis server."""

from __future__ import annotations

from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.core.auth import create_api_key, issue_user_token
from clarion.db.migrate import upgrade
from clarion.db.session import transaction
from clarion.runtime import Runtime
from clarion.settings import Settings
from tests.broker import drain


def test_limits_and_the_throttle_work_in_memory(tmp_path):
    settings = Settings.embedded(
        tmp_path,
        api_key_rate_limit="3/minute",
        user_rate_limit="2/minute",
        category_throttle={"promo": "1/hour"},
    )
    assert settings.redis_url == "memory://"
    upgrade(settings.database_url)
    runtime = Runtime(settings)
    with transaction(runtime.sessions) as session:
        _, secret = create_api_key(session=session, name="dev", scopes=["notify"])
    key = {"Authorization": f"Bearer {secret}"}
    me = {"Authorization": f"Bearer {issue_user_token(settings, 'ada')}"}
    body = {"recipients": ["ada"], "category": "promo", "title": "Sale"}
    try:
        with TestClient(create_app(runtime=runtime)) as client:
            sent = [client.post("/v1/notifications", json=body, headers=key) for _ in range(4)]
            drain(runtime.celery)
            inbox = [client.get("/v1/me/notifications", headers=me) for _ in range(3)]
    finally:
        runtime.close()

    assert [a.status_code for a in sent] == [202, 202, 202, 429]
    assert sent[-1].headers["ratelimit"].startswith('"api-key";r=0;t=')
    assert [a.status_code for a in inbox] == [200, 200, 429]
    assert len(inbox[0].json()["items"]) == 1  # promo: one an hour
