"""The same core path on the embedded profile: SQLite, SQLite broker, memory pub/sub."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.core import enqueue
from clarion.core.auth import create_api_key, issue_user_token
from clarion.core.create import create_notifications
from clarion.core.pubsub import decode
from clarion.core.schemas import NotificationCreate
from clarion.db import recipient_inbox
from clarion.db.migrate import upgrade
from clarion.db.recipient_inbox import InboxFilter
from clarion.db.session import transaction
from clarion.runtime import Runtime
from clarion.settings import Settings
from tests.broker import drain


@pytest.fixture
def runtime(tmp_path):
    settings = Settings.embedded(tmp_path)
    upgrade(settings.database_url)
    rt = Runtime(settings)
    yield rt
    rt.close()


def run_create(runtime, msg):
    return create_notifications([msg], **runtime.pipeline.kwargs())


def test_create_is_idempotent_and_dedupes_on_sqlite(runtime):
    msg = enqueue.prepare(
        NotificationCreate(recipients=["a", "b"], category="x", title="t", dedupe_key="k")
    )
    first = run_create(runtime, msg)
    again = run_create(runtime, msg)
    other = run_create(
        runtime,
        enqueue.prepare(
            NotificationCreate(recipients=["a"], category="x", title="t", dedupe_key="k")
        ),
    )

    assert len(first.notifications) == 2
    assert again.skipped_existing == 2 and again.notifications == []
    assert other.skipped_dedupe == 1
    with runtime.sessions() as s:
        rows = recipient_inbox.page(
            session=s, recipient_id="a", limit=10, before=None, filters=InboxFilter()
        )
    assert [r.seq for r in rows] == [1]


def test_memory_pubsub_delivers_created_events_to_a_subscriber(runtime):
    async def scenario():
        stream = runtime.pubsub.subscribe()
        assert await stream.__anext__() == {"type": "subscribed"}  # live from here on
        first = asyncio.ensure_future(stream.__anext__())
        msg = enqueue.prepare(NotificationCreate(recipients=["a"], category="x", title="hello"))
        await asyncio.to_thread(run_create, runtime, msg)
        [event] = decode(await asyncio.wait_for(first, 2))  # one message per batch
        await stream.aclose()
        return event, msg

    event, msg = asyncio.run(scenario())
    assert event["type"] == "notification.created"
    assert event["recipient"] == "a"
    assert event["data"]["id"] == str(msg.items[0][0]) and event["data"]["title"] == "hello"


def test_api_to_inbox_through_the_sqlite_broker(runtime):
    with transaction(runtime.sessions) as s:
        _, key = create_api_key(session=s, name="t", scopes=["notify"])
    token = issue_user_token(runtime.settings, "a")
    with TestClient(create_app(runtime=runtime)) as client:
        sent = client.post(
            "/v1/notifications",
            json={"recipients": ["a"], "category": "x", "title": "embedded"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert sent.status_code == 202
        assert drain(runtime.celery) == 1
        inbox = client.get("/v1/me/notifications", headers={"Authorization": f"Bearer {token}"})

    assert [i["title"] for i in inbox.json()["items"]] == ["embedded"]


def test_topic_fan_out_through_the_sqlite_broker(runtime):
    with transaction(runtime.sessions) as s:
        _, key = create_api_key(session=s, name="t", scopes=["notify"])
    producer = {"Authorization": f"Bearer {key}"}
    members = [f"m{i:02d}" for i in range(25)]
    with TestClient(create_app(runtime=runtime)) as client:
        put = client.put("/v1/topics/all/subscribers", json={"add": members}, headers=producer)
        assert put.json()["added"] == 25
        sent = client.post(
            "/v1/notifications",
            json={"topic": "all", "category": "x", "title": "everyone"},
            headers=producer,
        ).json()
        drain(runtime.celery)
        progress = client.get(sent["progress"], headers=producer).json()
        token = issue_user_token(runtime.settings, "m07")
        inbox = client.get("/v1/me/notifications", headers={"Authorization": f"Bearer {token}"})

    assert (progress["total"], progress["created"], progress["done"]) == (25, 25, True)
    assert [i["title"] for i in inbox.json()["items"]] == ["everyone"]


def test_the_notification_centre_on_sqlite_snooze_release_seen_and_test_limit(tmp_path):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from clarion.db.models import Notification

    settings = Settings.embedded(tmp_path, test_notification_rate_limit="1/minute")
    upgrade(settings.database_url)
    runtime = Runtime(settings)
    me = {"Authorization": f"Bearer {issue_user_token(settings, 'a')}"}
    inbox = "/v1/me/notifications"

    async def scenario(client) -> list[dict]:
        stream = runtime.pubsub.subscribe()
        assert await stream.__anext__() == {"type": "subscribed"}
        with runtime.engine.begin() as conn:  # the snooze has ended
            conn.execute(
                update(Notification).values(snoozed_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        release = runtime.celery.tasks["clarion.snooze.release"]
        assert [release(), release()] == [{"released": 1}, {"released": 0}]  # beat, twice
        got = decode(await asyncio.wait_for(stream.__anext__(), 2))
        await stream.aclose()
        return got

    with TestClient(create_app(runtime=runtime)) as client:
        assert (
            client.post(f"{inbox}/test", json={"channel": "in_app"}, headers=me).status_code == 202
        )
        assert (
            client.post(f"{inbox}/test", json={"channel": "in_app"}, headers=me).status_code == 429
        )
        drain(runtime.celery)
        [item] = client.get(inbox, headers=me).json()["items"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        client.patch(f"{inbox}/{item['id']}", json={"snoozed_until": later}, headers=me)
        assert client.get(f"{inbox}/unread-count", headers=me).json()["total"] == 0
        events = asyncio.run(scenario(client))
        counts = client.get(f"{inbox}/unread-count", headers=me).json()
        seen = client.post(f"{inbox}/seen", json={"up_to": item["seq"]}, headers=me).json()

    runtime.close()
    assert [e["type"] for e in events] == ["notification.unsnoozed", "unread_count"]
    assert events[0]["data"]["id"] == item["id"]
    assert counts == {"total": 1, "by_category": {"test": 1}, "unseen": 1}
    assert seen == {"updated": 1}
