"""The contract every channel passes, against its real peer (tests/channels/).

Adding a channel adds its harness name here; nothing else in this file changes.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from clarion import channels
from clarion.core import enqueue, queues
from clarion.core.schemas import NotificationCreate
from clarion.db.models import DeadLetter, Delivery
from tests.broker import drain, queued
from tests.channels import FAST_RETRY, outcomes
from tests.conftest import server_settings

HARNESSES = ["email_harness", "push_harness", "webhook_harness", "chat_harness", "sms_harness"]
# What each peer can make happen: SMTP has no "gone" distinct from a permanent 5xx, and an
# SMS through Apprise has neither (its notify() says only sent or not).
PERMANENT = [h for h in HARNESSES if h != "sms_harness"]
GONE = [h for h in PERMANENT if h != "email_harness"]


@pytest.fixture(params=HARNESSES)
def harness(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def rt(harness, make_runtime):
    return make_runtime(**FAST_RETRY, **harness.settings)


def send_one(rt, harness, recipient="r1", title="Hello <b>world</b>", limit=10_000):
    """Send one notification to the recipient's target; run at most ``limit`` tasks."""
    harness.add_target(rt, recipient)
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=[recipient], category="contract", title=title, channels=[harness.key]
        )
    )
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery, names=(queues.CREATE, queues.deliver_queue(harness.key)), limit=limit)
    with rt.sessions() as s:
        return s.scalars(select(Delivery).where(Delivery.notification_id == msg.items[0][0])).all()


def test_bad_settings_refuse_to_build(harness, pg_url):
    assert harness.bad_settings
    for overrides in harness.bad_settings:
        with pytest.raises(channels.ChannelConfigError):
            channels.build(harness.key, server_settings(pg_url, **overrides))


def test_a_send_is_delivered_once_with_the_providers_reference(rt, harness):
    [row] = send_one(rt, harness)
    assert row.status == "sent" and row.provider_ref
    assert harness.received() == 1
    # A re-run of the deliver task for a sent delivery sends nothing.
    rt.deliver(harness.key, [row.id])
    drain(rt.celery)
    assert harness.received() == 1


def test_a_transient_failure_is_retried_then_sent(rt, harness):
    harness.respond("transient")
    [row] = send_one(rt, harness, limit=2)  # create, one attempt
    assert row.status == "failed" and row.next_attempt_at is not None
    assert queued(rt.celery, queues.deliver_queue(harness.key)) == 1
    harness.respond("ok")
    drain(rt.celery)
    with rt.sessions() as s:
        row = s.get(Delivery, row.id)
    assert row.status == "sent" and outcomes(rt, row.id) == ["retry", "sent"]
    assert harness.received() == 1


@pytest.mark.parametrize("harness", PERMANENT, indirect=True)
def test_a_permanent_failure_goes_to_the_dead_letter_queue(rt, harness):
    assert getattr(harness, "permanent", True)
    harness.respond("permanent")
    [row] = send_one(rt, harness)
    assert row.status == "dead" and row.last_error
    with rt.sessions() as s:
        [letter] = s.scalars(select(DeadLetter)).all()
    assert letter.delivery_id == row.id and letter.channel == harness.key
    assert queued(rt.celery, queues.DEAD_LETTER) == 1
    assert harness.received() == 0


def test_exhausted_retries_go_to_the_dead_letter_queue(harness, make_runtime):
    rt = make_runtime(**FAST_RETRY, **harness.settings, delivery_max_attempts=3)
    harness.respond("transient")
    [row] = send_one(rt, harness)
    drain(rt.celery)
    with rt.sessions() as s:
        row = s.get(Delivery, row.id)
    assert row.status == "dead" and row.attempts == 3
    assert outcomes(rt, row.id) == ["retry", "retry", "dead"]
    assert "gave up after 3 attempts" in row.last_error


@pytest.mark.parametrize("harness", GONE, indirect=True)
def test_a_gone_target_is_deactivated_and_skipped(rt, harness):
    assert harness.gone
    harness.respond("gone")
    [row] = send_one(rt, harness)
    assert row.status == "skipped" and outcomes(rt, row.id) == ["gone"]
    assert not harness.target_active(rt, "r1")
    harness.respond("ok")
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=["r1"], category="contract", title="t", channels=[harness.key]
        )
    )
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery)
    with rt.sessions() as s:
        [after] = s.scalars(select(Delivery).where(Delivery.notification_id == msg.items[0][0]))
    assert after.status == "skipped" and harness.received() == 0
