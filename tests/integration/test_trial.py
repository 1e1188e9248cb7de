"""``POST /v1/me/notifications/test``: a real notification to the caller on the channels
they pick, through the send path; why one cannot arrive; a per-user rate limit shared by
every API process (Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.db.models import Delivery
from tests.broker import drain
from tests.channels.smtp import give_email

TEST = "/v1/me/notifications/test"
INBOX = "/v1/me/notifications"


@pytest.fixture
def rt(make_runtime, smtp_server):
    return make_runtime(**smtp_server.settings())


@pytest.fixture
def api(rt):
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as c:
        yield c


def test_an_in_app_test_lands_in_my_inbox_only(api, rt, user):
    answer = api.post(TEST, json={"channel": "in_app"}, headers=user("ada"))
    drain(rt.celery)

    assert answer.status_code == 202
    assert answer.json()["channels"] == ["in_app"] and answer.json()["skipped"] == {}
    [item] = api.get(INBOX, headers=user("ada")).json()["items"]
    assert item["category"] == "test" and item["title"] == "Test notification"
    assert item["severity"] == "low"
    assert api.get(INBOX, headers=user("bob")).json()["items"] == []


def test_the_test_speaks_my_language(api, rt, user, producer):
    api.put("/v1/subscribers/ada", json={"locale": "ru"}, headers=producer)
    api.post(TEST, json={"channel": "in_app"}, headers=user("ada"))
    drain(rt.celery)

    [item] = api.get(INBOX, headers=user("ada")).json()["items"]
    assert item["title"] == "Тестовое уведомление"


def test_a_test_email_is_sent_even_in_quiet_hours(api, rt, user, smtp_server):
    give_email(rt, "ada", "ada@example.com")
    now = datetime.now(UTC)
    window = {"start": f"{(now.hour - 1) % 24:02d}:00", "end": f"{(now.hour + 2) % 24:02d}:00"}
    api.put("/v1/me/preferences", json={"quiet_hours": window}, headers=user("ada"))

    answer = api.post(TEST, json={"channel": "email"}, headers=user("ada"))
    drain(rt.celery)

    assert answer.status_code == 202 and answer.json()["channels"] == ["email"]
    [mail] = smtp_server.messages
    assert mail.recipients == ["ada@example.com"]
    assert mail.message["Subject"] == "Test notification"


@pytest.mark.parametrize(
    ("channel", "slug"), [("email", "no-target"), ("push", "channel-disabled")]
)
def test_a_channel_that_cannot_reach_me_is_a_422_the_page_can_translate(
    api, rt, user, channel, slug
):
    # ada has no email address; this deployment has no VAPID keys (push is not configured)
    answer = api.post(TEST, json={"channel": channel}, headers=user("ada"))

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == f"urn:clarion:problem:{slug}"
    assert answer.json()["channel"] == channel
    drain(rt.celery)
    assert api.get(INBOX, headers=user("ada")).json()["items"] == []


def test_a_channel_i_switched_off_is_reported(api, rt, user):
    give_email(rt, "ada")
    api.put("/v1/me/preferences", json={"channels": {"email": False}}, headers=user("ada"))

    answer = api.post(TEST, json={"channel": "email"}, headers=user("ada"))

    assert answer.status_code == 422
    assert answer.json()["type"] == "urn:clarion:problem:channel-disabled"


def test_all_sends_on_every_channel_that_can_reach_me_and_says_why_not_the_others(
    api, rt, user, smtp_server
):
    give_email(rt, "ada")

    answer = api.post(TEST, json={"channel": "all"}, headers=user("ada"))
    drain(rt.celery)

    assert answer.status_code == 202
    assert answer.json()["channels"] == ["in_app", "email"]
    assert answer.json()["skipped"] == {
        "push": "channel-disabled",  # no VAPID keys in these settings
        "chat": "no-target",  # configured, but ada has no chat URL
        "sms": "channel-disabled",  # no CLARION_SMS__URL
    }
    with rt.sessions() as s:
        channels = {d.channel: d.status for d in s.query(Delivery)}
    assert channels == {"email": "sent"}  # the inbox is the notification row itself
    assert len(smtp_server.messages) == 1


def test_bad_bodies_are_422(api, user):
    for body in ({"channel": "webhook"}, {"channel": "sms"}, {"channel": "all", "x": 1}):
        assert api.post(TEST, json=body, headers=user("ada")).status_code == 422


def test_the_rate_limit_is_per_user_and_shared_by_api_processes(rt, make_runtime, user):
    other = make_runtime()  # a second API process on the same Redis
    with (
        TestClient(create_app(runtime=rt)) as first,
        TestClient(create_app(runtime=other)) as second,
    ):
        answers = [
            (first, second)[i % 2].post(TEST, json={"channel": "in_app"}, headers=user("ada"))
            for i in range(6)
        ]
        bob = second.post(TEST, json={"channel": "in_app"}, headers=user("bob"))

    assert [a.status_code for a in answers] == [202] * 5 + [429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"] == "urn:clarion:problem:rate-limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert bob.status_code == 202
    drain(rt.celery)
    assert len(first.get(INBOX, headers=user("ada")).json()["items"]) == 5


def test_the_limit_is_a_setting(make_runtime, user):
    with TestClient(create_app(runtime=make_runtime(test_notification_rate_limit="1/hour"))) as c:
        codes = [c.post(TEST, json={"channel": "in_app"}, headers=user("ada")).status_code
                 for _ in range(2)]  # fmt: skip
        retry = c.post(TEST, json={"channel": "in_app"}, headers=user("ada")).headers
    assert codes == [202, 429]
    assert 3500 <= int(retry["retry-after"]) <= 3600
