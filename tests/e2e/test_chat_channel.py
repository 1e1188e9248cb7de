"""The chat channel in real processes: a subscriber's chat URL set through the API, sent
by a worker through Apprise's json:// notifier to a local receiver, with preferences,
quiet hours, a retry, the outbound policy and the worker's DEBUG log (no URL in it)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from clarion.db.models import Delivery
from tests.channels import outcomes
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, quiet_hours_now, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e
KEY = "chat"
TOKEN = "T0E2E/B0E2E/SECRETE2E"  # noqa: S105 (a test URL's path)


def rows(runtime, nid) -> list[Delivery]:
    with runtime.sessions() as s:
        return list(s.scalars(select(Delivery).where(Delivery.notification_id == nid)))


def test_chat_through_a_real_worker(runtime, apprise_receiver, tmp_path):
    env = process_env(
        runtime.settings.database_url,
        CLARION_LOG_LEVEL="DEBUG",
        CLARION_RETRY_BACKOFF_SECONDS="0.05",
        CLARION_CHAT__TIMEOUT="5",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = run(["keys", "create", "e2e", "--scope", "notify"], env).strip().splitlines()[-1]
    me = {who: {"Authorization": f"Bearer {run(['token', who], env).strip()}"} for who in "abcd"}
    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_ready(base, api)
        listed = httpx.get(f"{base}/v1/me/preferences", headers=me["a"]).json()["channels"]
        assert listed[KEY] == {"enabled": True, "locked": False}
        for who in "abc":
            url = apprise_receiver.url(path=f"{who}/{TOKEN}")
            put = httpx.put(f"{base}/v1/me/addresses/{KEY}", json={"address": url}, headers=me[who])
            assert put.status_code == 200 and TOKEN not in put.text
        refused = httpx.put(
            f"{base}/v1/me/addresses/{KEY}",
            json={"address": "json://10.9.8.7/hook"},
            headers=me["d"],
        )
        assert refused.status_code == 422 and refused.json()["type"].endswith("url-not-allowed")
        # b switches chat off; c is inside quiet hours.
        off = {"channels": {KEY: False}}
        assert httpx.put(f"{base}/v1/me/preferences", json=off, headers=me["b"]).is_success
        quiet = quiet_hours_now()
        assert httpx.put(f"{base}/v1/me/preferences", json=quiet, headers=me["c"]).is_success
        apprise_receiver.failures = 1  # busy at first: the send is retried
        sent = httpx.post(
            f"{base}/v1/notifications",
            json={
                "recipients": ["a", "b", "c", "d"],
                "category": "e2e",
                "title": "Deploy finished",
                "body": "All green.",
                "channels": [KEY],
            },
            headers={"Authorization": f"Bearer {key}"},
        )
        assert sent.status_code == 202, sent.text
        ids = {n["recipient"]: n["id"] for n in sent.json()["notifications"]}
        wait_for(lambda: apprise_receiver.accepted(), 30, "the chat send", worker)
    finally:
        api.stop()
        worker.stop()
    [body] = apprise_receiver.accepted()
    assert (body["title"], body["message"]) == ("Deploy finished", "All green.")
    assert apprise_receiver.paths == [f"/a/{TOKEN}"]
    [a] = rows(runtime, ids["a"])
    assert a.status == "sent" and outcomes(runtime, a.id) == ["retry", "sent"]
    [b] = rows(runtime, ids["b"])
    assert (b.status, b.last_error) == ("skipped", "opted out")
    [c] = rows(runtime, ids["c"])
    assert c.status == "deferred" and c.last_error.startswith("deferred: quiet hours")
    [d] = rows(runtime, ids["d"])
    assert d.status == "skipped"  # no chat URL: the private one was refused
    log = worker.output()
    assert "apprise" in log.lower() or "deliver" in log  # it logged at DEBUG
    assert "SECRETE2E" not in log and "SECRETE2E" not in api.output()
