"""Digests on PostgreSQL: items held by the real routing (a daily cadence), collected by the
real digest task function, rendered by the stored ``digest`` template and sent to a real
SMTP server and push service."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from clarion.core import digests, enqueue
from clarion.core.schemas import NotificationCreate
from clarion.db.models import Delivery, Notification
from clarion.ids import as_utc
from tests.broker import drain
from tests.channels.smtp import give_email

INBOX = "/v1/me/notifications"


@pytest.fixture
def rt(make_runtime, smtp_server, push_harness):
    return make_runtime(
        **smtp_server.settings(), **push_harness.settings, category_digest={"comments": "daily"}
    )


def notify(rt, recipient="ada", category="comments", **fields):
    values = {"title": "t", "channels": ["in_app", "email", "push"], **fields}
    msg = enqueue.prepare(NotificationCreate(recipients=[recipient], category=category, **values))
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery)
    return msg.items[0][0]


def run(rt, now) -> int:
    made = digests.run(
        **rt.pipeline.kwargs(),
        now=now,
    )
    drain(rt.celery)
    return made


def held(rt, nid) -> list[Delivery]:
    with rt.sessions() as s:
        return list(
            s.scalars(
                select(Delivery)
                .where(Delivery.notification_id == nid, Delivery.channel != "in_app")
                .order_by(Delivery.channel)
            )
        )


def test_one_email_and_one_push_per_period_list_each_item_and_the_inbox_is_unaffected(
    rt, smtp_server, push_harness, client, user
):
    give_email(rt, "ada")
    browser = push_harness.add_target(rt, "ada")
    first = notify(rt, title="Bob replied to your post", body="Nice work <3")
    [email, push] = held(rt, first)
    period_end = as_utc(email.next_attempt_at)
    assert (email.status, email.last_error) == ("held", "digest: daily")
    assert (push.status, push.next_attempt_at) == ("held", email.next_attempt_at)
    second = notify(rt, title="Eve liked your post", url="https://app.example/p/1")
    expiring = notify(
        rt, title="Live Q&A starts now", expires_at=(period_end - timedelta(seconds=1))
    )
    other = notify(rt, category="billing", title="Invoice ready")  # not held: instant

    sent_at_once = len(smtp_server.messages)  # the billing email
    assert sent_at_once == 1 and push_harness.received() == 1
    assert run(rt, now=period_end - timedelta(seconds=1)) == 0  # the period has not ended
    assert len(smtp_server.messages) == sent_at_once

    assert run(rt, now=period_end) == 1
    [digest_mail] = smtp_server.messages[sent_at_once:]
    text = digest_mail.message.get_body(("plain",)).get_content()
    html = digest_mail.message.get_body(("html",)).get_content()
    assert digest_mail.message["Subject"] == "2 new notifications in comments"
    assert "Bob replied to your post" in text and "Eve liked your post" in text
    assert "Nice work <3" in text and "Nice work &lt;3" in html
    assert "Live Q&A" not in text  # expired by the end of the period
    pushes = push_harness.service.received(browser)
    assert len(pushes) == 2 and "Eve liked your post" in pushes[-1].payload["body"]

    with rt.sessions() as s:
        [digest] = s.scalars(select(Notification).where(Notification.type == "digest")).all()
    assert digest.in_inbox is False and digest.category == "comments"
    assert {d.status for n in (first, second) for d in held(rt, n)} == {"digested"}
    assert {d.provider_ref for n in (first, second) for d in held(rt, n)} == {str(digest.id)}
    assert {(d.status, d.last_error) for d in held(rt, expiring)} == {("skipped", "expired")}
    # The inbox has the items themselves (the expiring one until it expires), no digest.
    listed = [i["id"] for i in client.get(INBOX, headers=user("ada")).json()["items"]]
    assert listed == [str(other), str(expiring), str(second), str(first)]

    assert run(rt, now=period_end + timedelta(days=2)) == 0  # rerun: nothing twice
    assert len(smtp_server.messages) == sent_at_once + 1 and len(pushes) == 2


def test_an_empty_period_or_one_with_only_expired_items_sends_nothing(rt, smtp_server):
    give_email(rt, "ada")
    assert run(rt, now=None) == 0
    nid = notify(rt, title="Gone soon")
    [email, _push] = held(rt, nid)
    with rt.sessions() as s:
        s.get(Notification, nid).expires_at = as_utc(email.next_attempt_at)
        s.commit()

    assert run(rt, now=as_utc(email.next_attempt_at) + timedelta(days=1)) == 0
    assert smtp_server.messages == []
    with rt.sessions() as s:
        assert s.scalars(select(Notification).where(Notification.type == "digest")).all() == []
    assert {d.status for d in held(rt, nid)} == {"skipped"}


def test_each_recipient_and_category_gets_its_own_digest(make_runtime, smtp_server):
    rt = make_runtime(
        **smtp_server.settings(), category_digest={"comments": "daily", "likes": "daily"}
    )
    for who in ("ada", "bob"):
        give_email(rt, who)
    ends = set()
    for who, category, title in [
        ("ada", "comments", "c1"),
        ("ada", "comments", "c2"),
        ("ada", "likes", "l1"),
        ("bob", "comments", "c3"),
    ]:
        nid = notify(rt, who, category, title=title, channels=["in_app", "email"])
        ends |= {as_utc(d.next_attempt_at) for d in held(rt, nid)}

    assert run(rt, now=max(ends)) == 3
    got = {(m.recipients[0], m.message["Subject"]) for m in smtp_server.messages}
    assert got == {
        ("ada@example.com", "2 new notifications in comments"),
        ("ada@example.com", "1 new notification in likes"),
        ("bob@example.com", "1 new notification in comments"),
    }
