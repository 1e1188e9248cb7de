"""Expiry and collapse on PostgreSQL, through the real create task, deliver step, sweeper,
inbox API and stream replay, with a real SMTP server and push service."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from clarion.core import enqueue, queues, replay, sweeper
from clarion.core.create import create_notifications
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Delivery, Subscriber
from clarion.ids import as_utc, utcnow
from tests.broker import drain, queued
from tests.channels import outcomes
from tests.channels.smtp import give_email

INBOX = "/v1/me/notifications"


class Captured:
    """A publisher that keeps what create announces, to check the events and cursors."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def publish_many(self, events: list[dict]) -> None:
        self.events += events


@pytest.fixture
def post(client, runtime, producer):
    """post(recipients, **fields) -> the notification ids, after the create task ran."""

    def _post(recipients=("alice",), **fields) -> list[str]:
        payload = {"recipients": list(recipients), "category": "builds", "title": "t", **fields}
        answer = client.post("/v1/notifications", json=payload, headers=producer)
        assert answer.status_code == 202, answer.text
        drain(runtime.celery)
        return [n["id"] for n in answer.json()["notifications"]]

    return _post


def listed(client, user, who: str = "alice") -> list[str]:
    return [i["id"] for i in client.get(INBOX, headers=user(who)).json()["items"]]


def unread(client, user, who: str = "alice") -> int:
    return client.get(f"{INBOX}/unread-count", headers=user(who)).json()["total"]


def deliveries(rt, nid) -> list[Delivery]:
    with rt.sessions() as s:
        return list(s.scalars(select(Delivery).where(Delivery.notification_id == nid)))


# -- expiry ---------------------------------------------------------------------------------
def test_an_expired_notification_leaves_the_inbox_counts_and_replay_at_its_time(
    client, runtime, post, user
):
    expires_at = utcnow() + timedelta(seconds=1.5)
    [lasting] = post(title="stays")
    [fleeting] = post(title="flash sale", expires_at=expires_at.isoformat())
    assert listed(client, user) == [fleeting, lasting] and unread(client, user) == 2

    time.sleep(max(0.0, (expires_at - utcnow()).total_seconds()) + 0.1)
    assert listed(client, user) == [lasting] and unread(client, user) == 1
    assert (
        client.patch(f"{INBOX}/{fleeting}", json={"read": True}, headers=user("alice")).status_code
        == 404
    )
    assert client.post(f"{INBOX}/read-all", json={}, headers=user("alice")).json() == {"updated": 1}
    with runtime.sessions() as s:
        replayed = replay.replay(session=s, recipient_id="alice", since=0, limit=10)
    assert [e["data"]["id"] for e in replayed if e["type"] == "notification.created"] == [lasting]


def test_a_notification_not_meant_for_the_inbox_is_never_listed_or_counted(
    client, runtime, post, user
):
    [inbox] = post(title="in the inbox")
    post(title="email only", channels=["email"])
    assert listed(client, user) == [inbox] and unread(client, user) == 1
    with runtime.sessions() as s:
        replayed = replay.replay(session=s, recipient_id="alice", since=0, limit=10)
    assert [e["data"]["id"] for e in replayed] == [inbox]


def test_an_expired_notification_is_sent_on_no_channel_and_the_sweeper_leaves_it(
    make_runtime, smtp_server, push_harness
):
    rt = make_runtime(**smtp_server.settings(), **push_harness.settings)
    give_email(rt, "ada")
    push_harness.add_target(rt, "ada")
    expires_at = utcnow() + timedelta(seconds=1)
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=["ada"],
            category="sales",
            title="Flash sale ends in an hour",
            channels=["in_app", "email", "push"],
            expires_at=expires_at,
        )
    )
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery, names=(queues.CREATE,))  # stored; its sends wait in the broker
    time.sleep(max(0.0, (expires_at - utcnow()).total_seconds()) + 0.1)
    drain(rt.celery)

    assert smtp_server.messages == [] and push_harness.received() == 0
    [(nid, _)] = msg.items
    external = [d for d in deliveries(rt, nid) if d.channel != "in_app"]
    assert {(d.channel, d.status, d.last_error) for d in external} == {
        ("email", "skipped", "expired"),
        ("push", "skipped", "expired"),
    }
    assert all(outcomes(rt, d.id) == ["expired"] for d in external)

    swept = sweeper.sweep(
        sessions=rt.sessions, settings=rt.settings, scheduler=rt, now=utcnow() + timedelta(days=1)
    )
    assert swept == {} and queued(rt.celery, queues.deliver_queue("email")) == 0
    assert {d.status for d in deliveries(rt, nid) if d.channel != "in_app"} == {"skipped"}


# -- collapse -------------------------------------------------------------------------------
def test_a_newer_notification_with_the_same_collapse_key_replaces_the_older(
    client, runtime, post, producer, user
):
    [running] = post(title="Build 42 running", collapse_key="build-42")
    [other] = post(title="Build 43 running", collapse_key="build-43")
    [bob_running] = post(recipients=["bob"], title="Build 42 running", collapse_key="build-42")
    [passed] = post(title="Build 42 passed", collapse_key="build-42")

    assert listed(client, user) == [passed, other] and unread(client, user) == 2
    assert listed(client, user, "bob") == [bob_running]  # another recipient's is untouched
    old = client.get(f"/v1/notifications/{running}", headers=producer).json()
    assert old["replaced_by"] == passed and old["deleted_at"] is not None
    # A client that was offline replays the change in order: the old one is removed.
    with runtime.sessions() as s:
        replayed = replay.replay(session=s, recipient_id="alice", since=0, limit=10)
    assert [(e["type"], e["cursor"]) for e in replayed] == [
        ("notification.created", 1),
        ("notification.created", 2),
        ("notification.created", 3),
        ("notification.updated", 4),
    ]
    assert replayed[-1]["data"] == {"ids": [running], "deleted": True, "replaced_by": passed}


def test_two_with_one_key_in_one_batch_leave_only_the_newest_and_events_in_cursor_order(
    client, runtime, user
):
    first, second = (
        enqueue.prepare(
            NotificationCreate(
                recipients=["alice"], category="scores", title=title, collapse_key="match-7"
            )
        )
        for title in ("1 - 0", "1 - 1")
    )
    captured = Captured()
    create_notifications(
        [first, second],
        sessions=runtime.sessions,
        settings=runtime.settings,
        publisher=captured,
        dispatcher=runtime,
        channels=runtime.channels,
    )
    [(old, _)], [(new, _)] = first.items, second.items
    assert listed(client, user) == [str(new)]
    assert [(e["type"], e["cursor"]) for e in captured.events] == [
        ("notification.created", 1),
        ("notification.created", 2),
        ("notification.updated", 3),
        ("unread_count", 3),
    ]
    assert captured.events[2]["data"]["ids"] == [str(old)]
    # The bell follows: the replaced one was unread, so the count is 1, not 2.
    assert captured.events[-1]["data"] == {"total": 1, "by_category": {"scores": 1}, "unseen": 1}


def test_the_replaced_notifications_unsent_email_is_skipped_and_only_the_update_is_sent(
    make_runtime, smtp_server
):
    rt = make_runtime(**smtp_server.settings())
    give_email(rt, "ada")
    ids = []
    for title in ("Order shipped", "Order out for delivery"):
        msg = enqueue.prepare(
            NotificationCreate(
                recipients=["ada"],
                category="orders",
                title=title,
                channels=["in_app", "email"],
                collapse_key="order-9",
            )
        )
        enqueue.enqueue(rt.celery, msg)
        drain(rt.celery, names=(queues.CREATE,))  # the first email is not sent yet
        ids.append(msg.items[0][0])
    drain(rt.celery)

    [got] = smtp_server.messages
    assert got.message["Subject"] == "Order out for delivery"
    [email] = [d for d in deliveries(rt, ids[0]) if d.channel == "email"]
    assert email.status == "skipped" and email.last_error == f"replaced by {ids[1]}"


def test_an_email_deferred_by_quiet_hours_that_expires_meanwhile_is_never_sent(
    make_runtime, smtp_server
):
    rt = make_runtime(**smtp_server.settings())
    give_email(rt, "ada")
    now = utcnow()
    with rt.sessions() as s:  # quiet from an hour ago to an hour ahead (UTC)
        ada = s.get(Subscriber, "ada")
        ada.quiet_hours_start = f"{now - timedelta(hours=1):%H:%M}"
        ada.quiet_hours_end = f"{now + timedelta(hours=1):%H:%M}"
        s.commit()
    expires_at = utcnow() + timedelta(seconds=1)
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=["ada"],
            category="sales",
            title="Flash sale",
            channels=["in_app", "email"],
            expires_at=expires_at,
        )
    )
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery)
    [(nid, _)] = msg.items
    [email] = [d for d in deliveries(rt, nid) if d.channel == "email"]
    assert email.status == "deferred"

    time.sleep(max(0.0, (expires_at - utcnow()).total_seconds()) + 0.1)
    end_of_quiet = as_utc(email.next_attempt_at)
    swept = sweeper.sweep(
        sessions=rt.sessions, settings=rt.settings, scheduler=rt, now=end_of_quiet
    )
    assert swept == {"deferred": 1}
    drain(rt.celery)
    [email] = [d for d in deliveries(rt, nid) if d.channel == "email"]
    assert (email.status, email.last_error) == ("skipped", "expired")
    assert smtp_server.messages == []
