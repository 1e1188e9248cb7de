"""Topic fan-out and the priority lane with real ``clarion api`` and ``clarion worker``
processes, PostgreSQL, Redis and an SMTP server."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from clarion.core import enqueue, queues
from clarion.core.auth import issue_user_token
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Notification, Subscriber
from tests.channels.smtp import SENDER, give_email
from tests.conftest import process_env
from tests.e2e.procs import Proc, free_port, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e
BROADCAST = 40_000  # ~5-10 s of fan-out for two worker processes on two cores


@pytest.fixture
def env(runtime, smtp_server) -> dict[str, str]:
    return process_env(
        runtime.settings.database_url,
        CLARION_LOG_LEVEL="WARNING",
        CLARION_SMTP_HOST="127.0.0.1",
        CLARION_SMTP_PORT=str(smtp_server.port),
        CLARION_SMTP_FROM=SENDER,
    )


class Api:
    def __init__(self, env: dict[str, str], tmp) -> None:
        self.key = run(["keys", "create", "e2e", "--scope", "notify"], env).split()[-1]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(["api", "--port", str(self.port)], env, tmp / "api.log")
        self.headers = {"Authorization": f"Bearer {self.key}"}
        wait_ready(self.base, self.proc)

    def post(self, path: str, body: dict) -> dict:
        answer = httpx.post(f"{self.base}{path}", json=body, headers=self.headers, timeout=30)
        assert answer.status_code == 202, answer.text
        return answer.json()

    def subscribe(self, topic: str, ids: list[str]) -> None:
        for start in range(0, len(ids), 10_000):
            done = httpx.put(
                f"{self.base}/v1/topics/{topic}/subscribers",
                json={"add": ids[start : start + 10_000]},
                headers=self.headers,
                timeout=60,
            )
            assert done.status_code == 200, done.text

    def progress(self, request_id: str) -> dict:
        answer = httpx.get(f"{self.base}/v1/requests/{request_id}", headers=self.headers)
        return answer.json() if answer.status_code == 200 else {"created": 0, "done": False}


def inbox(api: Api, runtime, user: str) -> list[str]:
    token = issue_user_token(runtime.settings, user)
    items = httpx.get(
        f"{api.base}/v1/me/notifications", headers={"Authorization": f"Bearer {token}"}
    ).json()["items"]
    return [i["title"] for i in items]


def broker_idle(runtime) -> bool:
    """Nothing queued and nothing unacknowledged (acks_late: nothing running either)."""
    client = runtime.celery.connection_for_write().default_channel.client
    return client.hlen("unacked") == 0 and all(client.llen(q) == 0 for q in queues.ALL_QUEUES)


def critical(api: Api, title: str) -> None:
    api.post(
        "/v1/notifications",
        {
            "recipients": ["on-call"],
            "category": "security",
            "severity": "critical",
            "title": title,
            "channels": ["in_app", "email"],
        },
    )


DEDICATED = [["--lanes", "normal,bulk", "--concurrency", "2"], ["--lanes", "priority"]]
SHARED = [["--concurrency", "2"]]  # every lane, priority queues listed first


@pytest.mark.parametrize(
    "workers",
    [
        pytest.param(DEDICATED, id="dedicated-priority-worker"),
        pytest.param(SHARED, id="one-worker-for-every-lane"),
    ],
)
def test_a_critical_notification_is_delivered_while_a_broadcast_is_still_fanning_out(
    env, runtime, smtp_server, tmp_path, workers
):
    give_email(runtime, "on-call")
    api = Api(env, tmp_path)
    procs = [Proc(["worker", *a], env, tmp_path / f"worker{i}.log") for i, a in enumerate(workers)]
    try:
        api.subscribe("everyone", [f"user-{i:05d}" for i in range(BROADCAST)])
        # The workers are up and consuming every lane before the broadcast starts.
        critical(api, "warm-up")
        wait_for(lambda: len(smtp_server.messages) == 1, 30, "the warm-up email", procs[-1])

        broadcast = api.post(
            "/v1/notifications",
            {"topic": "everyone", "category": "news", "title": "v2", "channels": ["in_app"]},
        )["request_id"]
        wait_for(lambda: api.progress(broadcast)["created"] > 0, 30, "the broadcast to start")
        sent_at = time.monotonic()
        critical(api, "Password reset requested")

        def delivered() -> bool:
            emailed = [m.message["Subject"] for m in smtp_server.messages]
            return "Password reset requested" in emailed and "Password reset requested" in inbox(
                api, runtime, "on-call"
            )

        wait_for(delivered, 30, "the critical notification", procs[-1])
        took = time.monotonic() - sent_at
        at_delivery = api.progress(broadcast)
        assert at_delivery["created"] < BROADCAST, (
            f"the broadcast finished first ({took:.2f} s after the critical send)"
        )
        wait_for(lambda: api.progress(broadcast)["done"], 120, "the broadcast to finish")
        assert api.progress(broadcast)["created"] == BROADCAST
    finally:
        api.proc.stop()
        for p in procs:
            p.stop()


def test_a_fan_out_to_ten_thousand_redelivered_creates_each_notification_once(
    env, runtime, tmp_path
):
    members = [f"member-{i:05d}" for i in range(10_000)]
    api = Api(env, tmp_path)
    worker = Proc(["worker", "--concurrency", "2"], env, tmp_path / "worker.log")
    try:
        api.subscribe("members", members)
        message = enqueue.prepare(NotificationCreate(topic="members", category="news", title="hi"))
        # Published twice, as a broker redelivers a task whose worker died: the two copies
        # run at the same time on the two worker processes.
        enqueue.enqueue(runtime.celery, message)
        enqueue.enqueue(runtime.celery, message)
        request_id = str(message.request_id)
        wait_for(lambda: api.progress(request_id)["done"], 60, "the fan-out", worker)

        enqueue.enqueue(runtime.celery, message)  # and once more after it finished
        wait_for(lambda: broker_idle(runtime), 30, "the broker to drain", worker)
        progress = api.progress(request_id)
        assert (progress["status"], progress["total"], progress["created"]) == (
            "enqueued",
            10_000,
            10_000,
        )
        assert progress["batches"] == 10
    finally:
        api.proc.stop()
        worker.stop()

    with runtime.sessions() as s:
        per_recipient = dict(
            s.execute(
                select(Notification.recipient_id, func.count())
                .where(Notification.request_id == message.request_id)
                .group_by(Notification.recipient_id)
            ).all()
        )
        seqs = set(s.scalars(select(Subscriber.seq).where(Subscriber.id.in_(members))))
    assert sorted(per_recipient) == members and set(per_recipient.values()) == {1}
    assert seqs == {1}  # no subscriber's sequence was bumped by a duplicate either
