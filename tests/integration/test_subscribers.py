"""Subscriber profiles and GDPR erasure."""

from __future__ import annotations

import pytest

from clarion.db.models import Delivery, Notification
from tests.broker import drain

PROFILE = {
    "email": "ada@example.com",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "name": "Ada",
    "data": {"plan": "pro"},
}


def test_put_creates_then_replaces_a_profile(client, producer):
    created = client.put("/v1/subscribers/ada", json=PROFILE, headers=producer)
    replaced = client.put(
        "/v1/subscribers/ada", json={"email": "new@example.com"}, headers=producer
    )
    fetched = client.get("/v1/subscribers/ada", headers=producer)

    assert created.status_code == 200 and created.json()["name"] == "Ada"
    assert replaced.json()["email"] == "new@example.com"
    assert fetched.json()["name"] is None  # PUT replaces the whole profile
    assert fetched.json()["created_at"] == created.json()["created_at"]


@pytest.mark.parametrize(
    "bad",
    [
        {"timezone": "Mars/Olympus"},
        {"email": "not-an-address"},
        {"locale": "english please"},
        {"nickname": "x"},
        {"data": {"x": "y" * 17_000}},
    ],
    ids=["timezone", "email", "locale", "unknown-field", "data-too-big"],
)
def test_bad_profiles_are_422(client, producer, bad):
    response = client.put("/v1/subscribers/ada", json=bad, headers=producer)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_subscriber_is_404(client, producer):
    assert client.get("/v1/subscribers/nobody", headers=producer).status_code == 404
    assert client.delete("/v1/subscribers/nobody", headers=producer).status_code == 404


def test_delete_erases_the_subscriber_and_everything_sent_to_them(client, runtime, producer, user):
    client.put("/v1/subscribers/ada", json=PROFILE, headers=producer)
    payload = {
        "recipients": ["ada", "bob"],
        "category": "x",
        "title": "t",
        "channels": ["in_app", "email"],
    }
    client.post("/v1/notifications", json=payload, headers=producer)
    drain(runtime.celery)

    assert client.delete("/v1/subscribers/ada", headers=producer).status_code == 204

    assert client.get("/v1/subscribers/ada", headers=producer).status_code == 404
    assert client.get("/v1/me/notifications", headers=user("ada")).json()["items"] == []
    with runtime.sessions() as s:
        assert {n.recipient_id for n in s.query(Notification)} == {"bob"}
        # Bob's email delivery only (an in-app delivery is the notification row itself).
        bobs = s.query(Notification.id).one()[0]
        assert [(d.notification_id, d.channel) for d in s.query(Delivery)] == [(bobs, "email")]


def test_subscriber_endpoints_need_an_api_key(client, user):
    assert client.get("/v1/subscribers/ada", headers=user("ada")).status_code == 401
