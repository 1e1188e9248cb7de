"""No token, API key, signing secret or unsubscribe token reaches a log: a real run, grepped.

``clarion api`` and ``clarion worker`` run at DEBUG while the test uses every way a secret
travels: user tokens in the query of the WebSocket and SSE (accepted and refused),
unsubscribe links, API keys, a webhook whose secret is in the parameters of an insert that
PostgreSQL refuses, and a webhook delivery that fails all the way to the dead-letter log.
Then every log is searched for the values and for anything shaped like them.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from sqlalchemy import func, select, text
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from clarion.channels.links import unsubscribe_token
from clarion.core.auth import issue_user_token
from clarion.db.models import DeadLetter
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e

SHAPES = {
    "a JWT": re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"),
    "an API key": re.compile(r"clk_[A-Za-z0-9_-]{16,}"),
    "a webhook secret": re.compile(r"whsec_[A-Za-z0-9+/]{16,}"),
}
# A failure PostgreSQL raises on an insert whose parameters carry a fresh signing secret.
REFUSE = """
CREATE OR REPLACE FUNCTION secrets_test_refuse() RETURNS trigger AS $$
BEGIN
  IF NEW.description = 'refuse me' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER secrets_test_refuse BEFORE INSERT ON webhook_endpoints
  FOR EACH ROW EXECUTE FUNCTION secrets_test_refuse();
"""


@pytest.fixture
def refusing_inserts(runtime):
    with runtime.engine.begin() as conn:
        conn.execute(text(REFUSE))
    yield
    with runtime.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER secrets_test_refuse ON webhook_endpoints"))
        conn.execute(text("DROP FUNCTION secrets_test_refuse()"))


def use_the_stream(base: str, ws: str, token: str, expired: str) -> None:
    async def scenario():
        async with connect(f"{ws}/v1/me/stream?token={token}&since=0") as stream:
            await stream.recv()
        bearer = {"Authorization": f"Bearer {token}"}
        async with connect(f"{ws}/v1/me/stream", additional_headers=bearer) as stream:
            await stream.recv()
        for refused in (f"token={expired}", f"token={token}&since=x"):
            with pytest.raises(InvalidStatus):
                async with connect(f"{ws}/v1/me/stream?{refused}"):
                    pass

    asyncio.run(scenario())
    with httpx.stream("GET", f"{base}/v1/me/stream/sse", params={"token": token}) as sse:
        next(sse.iter_lines())
    assert httpx.get(f"{base}/v1/me/stream/sse", params={"token": expired}).status_code == 401


def decoded(log: str, log_format: str) -> str:
    """The text of a log's lines: JSON lines as their message and exception."""
    if log_format == "text":
        return log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return "\n".join(f"{line['message']}\n{line.get('exception', '')}" for line in lines)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_any_log(runtime, refusing_inserts, tmp_path, log_format):
    env = process_env(
        runtime.settings.database_url,
        CLARION_LOG_FORMAT=log_format,
        CLARION_LOG_LEVEL="DEBUG",
        CLARION_DELIVERY_MAX_ATTEMPTS="1",  # the failing webhook goes to the dead letters
    )
    notify = run(["keys", "create", "logs", "--scope", "notify"], env).split()[-1]
    admin = run(["keys", "create", "logs-admin", "--scope", "admin"], env).split()[-1]
    token = issue_user_token(runtime.settings, "ada")
    expired = issue_user_token(runtime.settings, "ada", ttl_seconds=-120)
    link = unsubscribe_token(runtime.settings, "ada", "secrets", "email")
    port = free_port()
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_ready(base, api)
        as_admin = {"Authorization": f"Bearer {admin}"}
        hook = {"url": "https://clarion-test.invalid/hook", "categories": ["secrets"]}
        created = httpx.post(f"{base}/v1/webhooks", json=hook, headers=as_admin)
        assert created.status_code == 201, created.text
        signing_secret = created.json()["secret"]
        refused = httpx.post(
            f"{base}/v1/webhooks", json={**hook, "description": "refuse me"}, headers=as_admin
        )
        assert refused.status_code == 500  # the trigger's doing: a database failure
        sent = httpx.post(
            f"{base}/v1/notifications",
            json={
                "recipients": ["ada"],
                "category": "secrets",
                "title": "hi",
                "channels": ["in_app", "webhook"],
            },
            headers={"Authorization": f"Bearer {notify}"},
        )
        assert sent.status_code == 202, sent.text
        use_the_stream(base, ws, token, expired)
        assert httpx.get(f"{base}/v1/unsubscribe", params={"token": link}).status_code == 200
        assert httpx.post(f"{base}/v1/unsubscribe", params={"token": link}).status_code == 200

        def dead_lettered() -> bool:
            with runtime.sessions() as s:
                return s.scalar(select(func.count()).select_from(DeadLetter)) == 1

        wait_for(dead_lettered, 30, "the webhook delivery in the dead letters", worker)
        wait_for(lambda: "dead letter" in worker.output(), 30, "the dead letter's log line")
    finally:
        api.stop()
        worker.stop()

    raw = {"api": api.output(), "worker": worker.output()}
    logs = {name: decoded(log, log_format) for name, log in raw.items()}
    # The run did log the places a secret could show up, so finding none means something.
    assert "refused by the test trigger" in logs["api"]
    assert '"WebSocket /v1/me/stream?token=' in logs["api"]
    assert "/v1/unsubscribe?token=" in logs["api"] and "/v1/me/stream/sse?token=" in logs["api"]
    assert "dead letter" in logs["worker"]
    secrets = {
        "the user token": token,
        "the expired user token": expired,
        "the unsubscribe token": link,
        "the notify API key": notify,
        "the admin API key": admin,
        "the webhook signing secret": signing_secret,
        "the webhook signing secret's base64": signing_secret.removeprefix("whsec_"),
    }
    searched = {**raw, **{f"{name} (decoded)": log for name, log in logs.items()}}
    leaks = [
        f"{what} in the {name} log"
        for name, log in searched.items()
        for what, value in secrets.items()
        if value in log
    ]
    leaks += [
        f"{shape} in the {name} log: {found.group()[:24]}…"
        for name, log in searched.items()
        for shape, pattern in SHAPES.items()
        if (found := pattern.search(log))
    ]
    assert leaks == []
