"""Scheduled sends on PostgreSQL: stored by the real create task, released by the real
release function (time driven through its ``now``), cancelled through the API."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from clarion.core import enqueue, replay, schedule
from clarion.core.schemas import CreateMessage, NotificationCreate
from clarion.db.models import Delivery, Notification, ScheduledNotification
from clarion.ids import new_id, utcnow
from tests.broker import drain
from tests.channels.smtp import give_email
from tests.threads import run_concurrently

INBOX = "/v1/me/notifications"
PROBLEM = "application/problem+json"


class Captured:
    """A publisher that keeps what release announces, to check the events' cursors."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def publish_many(self, events: list[dict]) -> None:
        self.events += events


def release(rt, now: datetime | None = None, publisher=None, **options) -> int:
    return schedule.release(
        sessions=rt.sessions,
        settings=rt.settings,
        publisher=publisher or rt.pubsub,
        dispatcher=rt,
        channels=rt.channels,
        now=now,
        **options,
    )


@pytest.fixture
def post(client, runtime, producer):
    """post(**fields) -> the 202 answer, after the create task ran."""

    def _post(recipients=("alice",), **fields) -> dict:
        payload = {"recipients": list(recipients), "category": "meetings", "title": "t", **fields}
        answer = client.post("/v1/notifications", json=payload, headers=producer)
        assert answer.status_code == 202, answer.text
        drain(runtime.celery)
        return answer.json()

    return _post


def ids_of(answer: dict) -> list[str]:
    return [n["id"] for n in answer["notifications"]]


def inbox_ids(client, user, who: str = "alice") -> set[str]:
    return {i["id"] for i in client.get(INBOX, headers=user(who)).json()["items"]}


def count(rt, model) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_a_future_send_waits_for_its_time_then_lands_with_the_next_cursor(
    client, runtime, post, producer, user
):
    send_at = utcnow() + timedelta(seconds=2)
    [nid] = ids_of(post(title="Standup in 10 minutes", send_at=send_at.isoformat()))
    assert inbox_ids(client, user) == set()
    status = client.get(f"/v1/notifications/{nid}", headers=producer).json()
    assert status["state"] == "scheduled" and status["recipient"] == "alice"
    assert status["content"]["title"] == "Standup in 10 minutes"
    assert datetime.fromisoformat(status["send_at"]) == send_at

    # Meanwhile an immediate notification takes alice's cursor 1.
    [now_id] = ids_of(post(title="sent at once"))
    assert release(runtime) == 0  # not due yet
    assert inbox_ids(client, user) == {now_id}

    captured = Captured()
    assert release(runtime, now=send_at, publisher=captured) == 1
    # On top of the inbox, where it arrived, though its id is older than the other one's.
    listed = client.get(INBOX, headers=user("alice")).json()["items"]
    assert [i["id"] for i in listed] == [nid, now_id]
    assert datetime.fromisoformat(listed[0]["created_at"]) == send_at
    [event] = captured.events
    assert event["type"] == "notification.created" and event["data"]["id"] == nid
    assert event["cursor"] == 2  # numbered at release: a client at cursor 1 gets it next
    with runtime.sessions() as s:
        replayed = replay.replay(session=s, recipient_id="alice", since=1, limit=10)
    assert [e["data"]["id"] for e in replayed] == [nid]
    status = client.get(f"/v1/notifications/{nid}", headers=producer).json()
    assert status["state"] == "created" and datetime.fromisoformat(status["send_at"]) == send_at
    assert [d["channel"] for d in status["deliveries"]] == ["in_app"]


def test_routing_happens_at_release_so_an_address_added_meanwhile_gets_the_email(
    make_runtime, smtp_server
):
    rt = make_runtime(**smtp_server.settings())
    send_at = utcnow() + timedelta(seconds=5)
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=["ada"],
            category="meetings",
            title="Board meeting at 10:00",
            channels=["in_app", "email"],
            send_at=send_at,
        )
    )
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery)
    assert count(rt, Delivery) == 0 and count(rt, Notification) == 0
    give_email(rt, "ada", "ada@example.com")  # after the send, before the release

    assert release(rt, now=send_at) == 1
    drain(rt.celery)
    [got] = smtp_server.messages
    assert got.recipients == ["ada@example.com"]
    assert got.message["Subject"] == "Board meeting at 10:00"


def test_cancel_before_release_means_it_is_never_delivered(client, runtime, post, producer, user):
    send_at = utcnow() + timedelta(seconds=1.5)
    answer = post(recipients=["alice", "bob"], send_at=send_at.isoformat())
    alice, bob = ids_of(answer)

    assert client.delete(f"/v1/notifications/{alice}", headers=producer).status_code == 204
    assert client.delete(f"/v1/notifications/{alice}", headers=producer).status_code == 204
    status = client.get(f"/v1/notifications/{alice}", headers=producer).json()
    assert status["state"] == "cancelled"

    assert release(runtime, now=send_at + timedelta(hours=1)) == 1  # bob's only
    assert inbox_ids(client, user, "alice") == set()
    assert inbox_ids(client, user, "bob") == {bob}

    # A late duplicate of the create task, after send_at, must not resurrect it.
    time.sleep(max(0.0, (send_at - utcnow()).total_seconds()) + 0.1)
    with runtime.sessions() as s:
        stored = s.get(ScheduledNotification, alice).message
    duplicate = CreateMessage.model_validate({**stored, "items": [(alice, "alice")]})
    enqueue.enqueue(runtime.celery, duplicate)
    drain(runtime.celery)
    assert inbox_ids(client, user, "alice") == set()
    assert count(runtime, Notification) == 1


def test_cancel_after_release_or_of_an_immediate_send_is_409_and_unknown_is_404(
    client, runtime, post, producer
):
    send_at = utcnow() + timedelta(seconds=30)
    [scheduled] = ids_of(post(send_at=send_at.isoformat()))
    [immediate] = ids_of(post())
    release(runtime, now=send_at)

    for nid in (scheduled, immediate):
        answer = client.delete(f"/v1/notifications/{nid}", headers=producer)
        assert answer.status_code == 409
        assert answer.headers["content-type"].startswith(PROBLEM)
        assert answer.json()["detail"].startswith("This notification was already sent")
    unknown = client.delete(f"/v1/notifications/{new_id()}", headers=producer)
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith(PROBLEM)
    assert client.delete(f"/v1/notifications/{scheduled}").status_code == 401


def test_release_and_create_reruns_store_and_send_each_notification_once(
    client, runtime, post, user
):
    send_at = utcnow() + timedelta(seconds=10)
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=[f"u{i}" for i in range(7)], category="m", title="t", send_at=send_at
        )
    )
    for _ in range(2):  # at-least-once: the create task runs twice
        enqueue.enqueue(runtime.celery, msg)
        drain(runtime.celery)
    assert count(runtime, ScheduledNotification) == 7

    # Two beats at once, in batches of 2: each row is released by one of them.
    released: list[int] = []
    errors = run_concurrently(
        lambda _: released.append(release(runtime, now=send_at, limit=2)), range(2)
    )
    assert errors == [] and sum(released) == 7
    assert release(runtime, now=send_at + timedelta(days=1)) == 0
    with runtime.sessions() as s:
        rows = s.execute(select(Notification.id, Notification.seq)).all()
        statuses = set(s.scalars(select(ScheduledNotification.status)))
    assert {r.id for r in rows} == {nid for nid, _ in msg.items}
    assert {r.seq for r in rows} == {1} and statuses == {"released"}
    notification_of = {r: str(nid) for nid, r in msg.items}
    assert inbox_ids(client, user, "u3") == {notification_of["u3"]}


def test_a_send_at_already_past_is_sent_at_once(client, post, user):
    [nid] = ids_of(post(send_at=(utcnow() - timedelta(minutes=5)).isoformat()))
    assert inbox_ids(client, user) == {nid}
