"""Actions on notifications: validated on send, stored, shown in the inbox and the live
stream, and a click recorded once, shown in the producer's status and POSTed to the
producer's webhooks (a real receiver verifying the signature) through the delivery rows."""

from __future__ import annotations

import pytest
import redis

from clarion.core.pubsub import decode
from tests.broker import drain
from tests.conftest import make_key

INBOX = "/v1/me/notifications"
SEND = "/v1/notifications"
ACTIONS = [
    {"id": "approve", "label": "Approve", "url": "https://app.example/approve/7"},
    {"id": "later", "label": "Remind me"},
]


@pytest.fixture
def admin(runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}


@pytest.fixture
def hook(client, admin, webhook_receiver):
    """hook("a", categories=[...]) registers an endpoint at the receiver, which trusts it."""

    def register(name: str = "hook", **fields) -> dict:
        url = webhook_receiver.url(name)
        response = client.post("/v1/webhooks", json={"url": url, **fields}, headers=admin)
        assert response.status_code == 201, response.text
        webhook_receiver.trust(url, response.json()["secret"])
        return response.json()

    return register


@pytest.fixture
def send(client, runtime, producer):
    def _send(recipient: str = "alice", **fields) -> str:
        payload = {"recipients": [recipient], "category": "links", "title": "Approve?"}
        answer = client.post(SEND, json={**payload, **fields}, headers=producer)
        assert answer.status_code == 202, answer.text
        drain(runtime.celery)
        return answer.json()["notifications"][0]["id"]

    return _send


def click(client, user, nid: str, action: str, who: str = "alice"):
    return client.post(f"{INBOX}/{nid}/actions/{action}", headers=user(who))


def test_actions_are_in_the_inbox_and_in_the_created_event(client, runtime, send, user):
    live = redis.Redis.from_url(runtime.settings.redis_url).pubsub()
    live.subscribe(runtime.pubsub.channel)
    live.get_message(timeout=1)

    nid = send(actions=ACTIONS)

    [item] = client.get(INBOX, headers=user("alice")).json()["items"]
    expected = [
        {**ACTIONS[0], "clicked_at": None},
        {**ACTIONS[1], "url": None, "clicked_at": None},
    ]
    assert item["id"] == nid and item["actions"] == expected
    message = live.get_message(timeout=2)
    [created] = decode(message["data"])
    assert created["type"] == "notification.created" and created["data"]["actions"] == expected
    live.close()


def test_a_send_by_template_carries_the_actions_of_the_request(client, send, user):
    send(title=None, template="clarion.test", actions=ACTIONS[:1])

    [item] = client.get(INBOX, headers=user("alice")).json()["items"]
    assert item["title"] == "Test notification"
    assert [a["id"] for a in item["actions"]] == ["approve"]


@pytest.mark.parametrize(
    ("actions", "problem"),
    [
        ([{"id": f"a{i}", "label": "x"} for i in range(4)], "at most 3"),
        ([{"id": "a", "label": "x"}, {"id": "a", "label": "y"}], "must not repeat"),
        ([{"id": "a", "label": "x", "url": "javascript:alert(1)"}], "http(s)"),
        ([{"id": "a", "label": "x", "url": " java\tscript:alert(1)"}], "control characters"),
        ([{"id": "has space", "label": "x"}], "pattern"),
        ([{"id": "a", "label": "x" * 65}], "at most 64"),
        ([{"id": "a"}], "required"),
    ],
    ids=["four", "repeated", "javascript", "hidden-scheme", "bad-id", "long-label", "no-label"],
)
def test_bad_actions_are_refused_with_the_reason(client, producer, actions, problem):
    body = {"recipients": ["alice"], "category": "links", "title": "t", "actions": actions}
    response = client.post(SEND, json=body, headers=producer)
    assert response.status_code == 422
    assert problem in response.text


def test_a_click_is_recorded_once_shown_in_the_status_and_sent_to_the_webhooks(
    client, runtime, producer, send, user, hook, webhook_receiver
):
    hook("links", categories=["links"])
    hook("other", categories=["billing"])
    nid = send(actions=ACTIONS)

    first = click(client, user, nid, "approve")
    drain(runtime.celery)
    again = click(client, user, nid, "approve")
    drain(runtime.celery)

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"url": ACTIONS[0]["url"]}
    [got] = webhook_receiver.deliveries  # once, to the category's endpoint only
    assert got.path == "/links" and webhook_receiver.rejected == []
    event = got.json
    assert event["type"] == "notification.action"
    assert event["data"]["id"] == nid and event["data"]["recipient"]["id"] == "alice"
    assert event["data"]["action"]["id"] == "approve"
    assert event["data"]["action"]["clicked_at"]
    status = client.get(f"{SEND}/{nid}", headers=producer).json()
    assert status["actions"][0]["clicked_at"] == event["data"]["action"]["clicked_at"]
    assert status["actions"][1]["clicked_at"] is None
    [webhook] = [d for d in status["deliveries"] if d["channel"] == "webhook"]
    assert webhook["event"] == "action:approve" and webhook["status"] == "sent"
    assert [a["outcome"] for a in webhook["timeline"]] == ["sent"]
    assert got.id == webhook_receiver.deliveries[0].id  # webhook-id: the delivery
    item = client.get(f"{INBOX}/{nid}", headers=user("alice")).json()
    assert item["read_at"] is not None  # a click opens it


def test_each_action_is_its_own_event_and_the_notification_itself_goes_too(
    client, runtime, producer, send, user, hook, webhook_receiver
):
    hook()
    nid = send(actions=ACTIONS, channels=["in_app", "webhook"])

    click(client, user, nid, "approve")
    click(client, user, nid, "later")
    drain(runtime.celery)

    types = sorted(
        (r.json["type"], r.json["data"].get("action", {}).get("id"))
        for r in webhook_receiver.deliveries
    )
    assert types == [
        ("notification.action", "approve"),
        ("notification.action", "later"),
        ("notification.created", None),
    ]
    assert client.get(f"{SEND}/{nid}", headers=producer).json()["actions"][1]["url"] is None


def test_a_click_without_webhooks_is_still_recorded(client, producer, send, user):
    nid = send(actions=ACTIONS)

    assert click(client, user, nid, "later").json() == {"url": None}

    status = client.get(f"{SEND}/{nid}", headers=producer).json()
    assert status["actions"][1]["clicked_at"] is not None
    assert [d["channel"] for d in status["deliveries"]] == ["in_app"]


def test_unknown_actions_and_other_users_notifications_are_404(client, producer, send, user):
    nid = send(actions=ACTIONS)
    plain = send()

    for response in (
        click(client, user, nid, "nope"),
        click(client, user, plain, "approve"),
        click(client, user, nid, "approve", who="mallory"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    status = client.get(f"{SEND}/{nid}", headers=producer).json()
    assert all(a["clicked_at"] is None for a in status["actions"])
    assert client.get(f"{INBOX}/{nid}", headers=user("alice")).json()["read_at"] is None


def test_a_click_still_reaches_the_webhooks_after_a_newer_notification_replaced_it(
    client, runtime, send, user, hook, webhook_receiver
):
    hook()
    nid = send(actions=ACTIONS, collapse_key="build-7")
    click(client, user, nid, "approve")  # its webhook event is queued, not sent yet
    send(title="Build 7: done", collapse_key="build-7")  # replaces it (drains everything)

    [got] = webhook_receiver.deliveries
    assert got.json["type"] == "notification.action" and got.json["data"]["id"] == nid
