"""Prometheus metrics scraped from real ``clarion api`` and ``clarion worker`` processes
(PostgreSQL, Redis, an SMTP server and a webhook receiver), moving as an operator expects."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from websockets.sync.client import connect

from clarion.core import queues
from clarion.core.auth import issue_user_token
from tests.channels.receiver import WebhookHarness
from tests.channels.smtp import SENDER, give_email
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready
from tests.monitoring import Scrape, referenced_metrics

pytestmark = pytest.mark.e2e
TOKEN = "scrape-" + "t" * 30
WORKER = "metrics@test"


@pytest.fixture
def env(runtime, smtp_server) -> dict[str, str]:
    return process_env(
        runtime.settings.database_url,
        CLARION_LOG_LEVEL="WARNING",
        CLARION_SMTP_HOST="127.0.0.1",
        CLARION_SMTP_PORT=str(smtp_server.port),
        CLARION_SMTP_FROM=SENDER,
        CLARION_RETRY_BACKOFF_SECONDS="0.2",
        CLARION_WEBHOOK_TIMEOUT_SECONDS="2",
        CLARION_TEST_NOTIFICATION_RATE_LIMIT="1/minute",
        CLARION_RULE_MODULES='["tests.engine_rules"]',
        CLARION_RULES=json.dumps({"system": {"operators": ["ops"], "load_per_core_threshold": 0}}),
        CLARION_METRICS_TOKEN=TOKEN,
    )


class Api:
    def __init__(self, env: dict[str, str], tmp) -> None:
        self.key = run(["keys", "create", "e2e", "--scope", "notify"], env).split()[-1]
        self.admin = run(["keys", "create", "ops", "--scope", "admin"], env).split()[-1]
        self.base = f"http://127.0.0.1:{free_port()}"
        self.proc = Proc(["api", "--port", self.base.rsplit(":", 1)[1]], env, tmp / "api.log")
        wait_ready(self.base, self.proc)

    def send(self, recipients: list[str], category: str, channels: list[str], **more) -> None:
        body = {"recipients": recipients, "category": category, "title": "t", "channels": channels}
        answer = httpx.post(
            f"{self.base}/v1/notifications",
            json={**body, **more},
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text

    def run_rule(self, key: str) -> None:
        answer = httpx.post(
            f"{self.base}/v1/rules/{key}/run",
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text

    def scrape(self) -> Scrape:
        return Scrape.of(f"{self.base}/metrics", TOKEN)


def test_metrics_follow_the_work_of_the_api_and_of_prefork_workers(
    env, runtime, smtp_server, webhook_receiver, tmp_path
):
    for user in ("alice", "bob", "carol", "on-call"):
        give_email(runtime, user)
    WebhookHarness(webhook_receiver).add_target(runtime, "everyone")
    # Of the four webhook deliveries, one is retried and one dead-lettered (in any order).
    webhook_receiver.answer(503)
    webhook_receiver.answer(400)
    api = Api(env, tmp_path)
    assert httpx.get(f"{api.base}/metrics").status_code == 401  # the token is required
    first = api.scrape()

    # No worker yet: the messages wait in their queues, and age there.
    every = ["in_app", "email", "webhook"]
    api.send(["alice", "bob", "carol"], "billing", every)
    api.send(["on-call"], "security", every, severity="critical")
    waiting = api.scrape()
    assert waiting.value("clarion_broker_up") == 1
    assert waiting.value("clarion_queue_messages", queue=queues.create_queue()) >= 1
    assert waiting.value("clarion_queue_messages", queue=queues.create_queue("priority")) >= 1
    assert waiting.value("clarion_queue_messages", queue="deliver.email") == 0
    wait_for(
        lambda: (
            api.scrape().value("clarion_queue_oldest_message_age_seconds", queue="create") >= 1.0
        ),
        10,
        "the oldest message to be a second old",
    )

    # A prefork worker: its parent serves what its two children counted.
    port = free_port()
    worker = Proc(
        ["worker", "--concurrency", "2", "--metrics-port", str(port), "--hostname", WORKER],
        env,
        tmp_path / "worker.log",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: httpx.get(url, timeout=2).status_code == 401, 60, "worker port", worker)

        def settled() -> bool:
            s = Scrape.of(url, TOKEN)
            return (
                s.value("clarion_deliveries_total", channel="webhook") == 4
                and s.value("clarion_deliveries_total", channel="email", status="sent") == 4
            )

        wait_for(settled, 60, "every delivery to settle", worker)
        w = Scrape.of(url, TOKEN)
        created = "clarion_notifications_created_total"
        assert w.value(created, category="billing", lane="normal") == 3
        assert w.value(created, category="security", lane="priority") == 1
        assert w.value(created) == 4
        deliveries = "clarion_deliveries_total"
        assert w.value(deliveries, channel="in_app", status="sent") == 4
        assert w.value(deliveries, channel="webhook", status="sent") == 3
        assert w.value(deliveries, channel="webhook", status="dead") == 1
        attempts = "clarion_delivery_attempts_total"
        assert w.value(attempts, channel="webhook") == 5
        assert w.value(attempts, channel="webhook", outcome="retry") == 1
        assert w.value(attempts, channel="email", outcome="sent") == 4
        assert w.value("clarion_delivery_retries_total", channel="webhook") == 1
        assert w.value("clarion_dead_letters_total", channel="webhook") == 1
        assert w.value("clarion_dead_letters_total", channel="email") == 0
        latency = "clarion_delivery_latency_seconds"
        assert w.value(f"{latency}_count", channel="email") == 4
        assert w.value(f"{latency}_count", channel="webhook") == 3
        # They waited over a second in the queue before any worker ran.
        assert w.value(f"{latency}_bucket", channel="email", le="0.5") == 0
        assert w.value(f"{latency}_sum", channel="email") >= 4 * 1.0
        assert w.value("clarion_send_duration_seconds_count", channel="webhook") == 5
        assert w.value("clarion_render_duration_seconds_count", channel="email") == 4
        assert w.value("clarion_worker_processes") == 2

        wait_for(
            lambda: api.scrape().value("clarion_queue_messages") == 0, 30, "the queues to drain"
        )
        drained = api.scrape()
        assert drained.value("clarion_queue_oldest_message_age_seconds") == 0

        streams = live_streams(api, runtime)

        # Rules, run by the worker: one alarm, then the same alarm deduplicated, then a bug.
        api.run_rule("high_load")
        rule_runs = "clarion_rule_runs_total"
        wait_for(lambda: Scrape.of(url, TOKEN).value(rule_runs, rule="high_load") == 1, 30, "run")
        api.run_rule("high_load")
        api.run_rule("test_broken")
        wait_for(lambda: Scrape.of(url, TOKEN).value(rule_runs) == 3, 30, "the other runs", worker)
        r = Scrape.of(url, TOKEN)
        assert r.value(rule_runs, rule="high_load", trigger="manual") == 2
        assert r.value("clarion_rule_candidates_total", rule="high_load") == 2
        assert r.value("clarion_rule_notifications_created_total", rule="high_load") == 1
        assert r.value("clarion_rule_duplicates_total", rule="high_load") == 1
        assert r.value("clarion_rule_errors_total", rule="high_load") == 0
        assert r.value("clarion_rule_errors_total", rule="test_broken") == 1
        assert r.value("clarion_rule_run_duration_seconds_count", rule="test_broken") == 1
        assert r.value(created, category="system") == 1

        # A pool child exits: the totals keep what it counted, the live gauge drops it.
        before = Scrape.of(url, TOKEN)
        runtime.celery.control.pool_shrink(1, destination=[WORKER])
        wait_for(
            lambda: Scrape.of(url, TOKEN).value("clarion_worker_processes") == 1,
            30,
            "a pool child to exit",
            worker,
        )
        after = Scrape.of(url, TOKEN)
        for name in (created, deliveries, attempts, f"{latency}_count", rule_runs):
            assert after.value(name) == before.value(name), name
    finally:
        worker.stop()
        api.proc.stop()

    # The API: requests by route template and status, 429s by limit.
    a = streams
    requests = "clarion_http_requests_total"
    posted = a.value(requests, method="POST", route="/v1/notifications", status="202")
    assert posted - first.value(requests, route="/v1/notifications") == 3
    assert a.value(requests, route="/v1/notifications/{notification_id}", status="404") == 1
    assert a.value(requests, route="unmatched", status="404") == 1
    assert a.value(requests, route="/metrics", status="401") == 1
    assert a.value(requests, route="/v1/me/notifications/test", status="429") == 1
    assert a.value("clarion_rate_limited_total", limit="test-notification") == 1
    assert a.value("clarion_http_request_duration_seconds_count", route="/v1/notifications") == 3
    shown = a.label_values()
    assert not {"alice", "/nowhere"} & shown
    assert not any("-" in v and len(v) == 36 for v in shown)  # no notification id

    # Every metric the dashboard and the alerts use was exported by these processes.
    assert referenced_metrics() <= a.names | r.names | w.names


def live_streams(api: Api, runtime) -> Scrape:
    """Open an SSE and a WebSocket stream, see them counted and fed; ask for a few things
    that are refused (a 404 by id, an unknown path, a test notification too many)."""
    token = issue_user_token(runtime.settings, "alice")
    events = "clarion_stream_events_fanned_out_total"
    before = api.scrape().value(events)
    ws_url = api.base.replace("http", "ws") + f"/v1/me/stream?token={token}"
    params = {"token": token}
    with (
        httpx.stream("GET", f"{api.base}/v1/me/stream/sse", params=params, timeout=30) as sse,
        connect(ws_url) as ws,
    ):
        ws.recv(timeout=10)  # the unread count: the connection is registered
        lines = sse.iter_lines()
        next(line for line in lines if line.startswith("event: unread_count"))
        s = api.scrape()
        assert s.value("clarion_stream_connections", transport="sse") == 1
        assert s.value("clarion_stream_connections", transport="websocket") == 1
        api.send(["alice"], "chat", ["in_app"])
        next(line for line in lines if line.startswith("event: notification.created"))
        while json.loads(ws.recv(timeout=10))["type"] != "notification.created":
            pass
    # Each of the two connections was handed the new notification.
    wait_for(lambda: api.scrape().value(events) - before >= 2, 10, "the fan-out count")
    wait_for(
        lambda: api.scrape().value("clarion_stream_connections") == 0, 10, "the streams to close"
    )
    key = {"Authorization": f"Bearer {api.key}"}
    httpx.get(f"{api.base}/v1/notifications/{uuid.uuid4()}", headers=key)
    assert httpx.get(f"{api.base}/nowhere").status_code == 404
    me = {"Authorization": f"Bearer {issue_user_token(runtime.settings, 'limited')}"}
    test = f"{api.base}/v1/me/notifications/test"
    assert httpx.post(test, json={"channel": "email"}, headers=me).status_code == 422
    assert httpx.post(test, json={"channel": "email"}, headers=me).status_code == 429
    time.sleep(0.1)
    return api.scrape()


def test_api_metrics_on_a_port_of_their_own_sum_every_api_worker(runtime, tmp_path):
    env = process_env(
        runtime.settings.database_url, CLARION_LOG_LEVEL="WARNING", CLARION_METRICS_TOKEN=TOKEN
    )
    port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    proc = Proc(
        ["api", "--port", str(port), "--workers", "2", "--metrics-port", str(metrics_port)],
        env,
        tmp_path / "api.log",
    )
    try:
        wait_ready(base, proc, timeout=60)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert httpx.get(f"{base}/metrics").status_code == 404  # not on the API's port
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        for _ in range(20):
            with httpx.Client() as client:  # a new connection each: any worker may answer
                assert client.get(f"{base}/healthz").status_code == 200
        # The port is served by uvicorn's parent, which answers no request itself.
        s = Scrape.of(url, TOKEN)
        assert s.value("clarion_http_requests_total", route="/healthz", status="200") == 20
        assert s.value("clarion_broker_up") == 1
    finally:
        proc.stop()
