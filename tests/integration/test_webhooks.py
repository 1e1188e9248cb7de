"""Webhooks end to end: admin API → producer API → broker → deliver → a real receiver.

The receiver (tests/channels/receiver.py) verifies every request with the independent
``standardwebhooks`` library, so these tests prove the signatures, not just our own maths.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from clarion.channels import Message, PermanentChannelError, RetryableChannelError
from clarion.channels.webhook.sender import WebhookChannel
from clarion.db.models import DeadLetter, Delivery, DeliveryAttempt, WebhookEndpoint
from tests.broker import drain
from tests.channels import FAST_RETRY
from tests.channels.receiver import Answer
from tests.conftest import make_key, server_settings

HOOKS = "/v1/webhooks"
SEND = "/v1/notifications"
TIMEOUT = 0.5


@pytest.fixture
def settings(pg_url, redis_client):
    """Fast retries and a short timeout, so retries and timeouts take milliseconds."""
    return server_settings(
        pg_url,
        **FAST_RETRY,
        webhook_timeout_seconds=TIMEOUT,
    )


@pytest.fixture
def admin(runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}


@pytest.fixture
def hook(client, admin, webhook_receiver):
    """hook("a", categories=[...]) registers an endpoint at the receiver, which trusts it."""

    def register(name: str = "hook", **fields) -> dict:
        url = webhook_receiver.url(name)
        response = client.post(HOOKS, json={"url": url, **fields}, headers=admin)
        assert response.status_code == 201, response.text
        endpoint = response.json()
        webhook_receiver.trust(url, endpoint["secret"])
        return endpoint

    return register


def send(client, producer, runtime, *, drained: bool = True, **fields) -> list[str]:
    """Send through the producer API (webhook only) and run the queued tasks."""
    payload = {"recipients": ["ada"], "category": "links", "title": "Your link expires"}
    payload |= {"channels": ["webhook"], **fields}
    response = client.post(SEND, json=payload, headers=producer)
    assert response.status_code == 202, response.text
    if drained:
        drain(runtime.celery)
    return [n["id"] for n in response.json()["notifications"]]


def deliveries(runtime, nid: str | None = None) -> list[Delivery]:
    query = select(Delivery).where(Delivery.channel == "webhook").order_by(Delivery.created_at)
    if nid is not None:
        query = query.where(Delivery.notification_id == uuid.UUID(nid))
    with runtime.sessions() as s:
        return list(s.scalars(query))


def attempts(runtime, delivery_id) -> list[DeliveryAttempt]:
    with runtime.sessions() as s:
        return list(
            s.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(DeliveryAttempt.id)
            )
        )


# -- delivery ------------------------------------------------------------------------------
def test_the_receiver_verifies_the_signature_and_gets_the_notification(
    client, runtime, producer, hook, webhook_receiver
):
    client.put(
        "/v1/subscribers/ada", json={"email": "ada@example.com", "name": "Ada"}, headers=producer
    )
    hook()
    [nid] = send(client, producer, runtime, title="Ça expire — 🔔", metadata={"link": "<b>x</b>"})

    [got] = webhook_receiver.deliveries
    [delivery] = deliveries(runtime, nid)
    assert webhook_receiver.rejected == []
    assert got.id == str(delivery.id)  # webhook-id: the delivery, stable across retries
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("Clarion-Webhooks/")
    assert "Ça expire — 🔔".encode() in got.body  # compact UTF-8, not \\u escapes
    event = got.json
    assert event["type"] == "notification.created"
    assert event["data"]["id"] == nid
    assert event["data"]["title"] == "Ça expire — 🔔"
    assert event["data"]["metadata"] == {"link": "<b>x</b>"}
    assert event["data"]["recipient"] == {
        "id": "ada",
        "email": "ada@example.com",
        "name": "Ada",
        "locale": None,
        "timezone": None,
    }
    assert (delivery.status, delivery.attempts, delivery.provider_ref) == ("sent", 1, "HTTP 200")


def test_categories_choose_the_endpoints(client, runtime, producer, hook, webhook_receiver):
    hook("links", categories=["links"])
    hook("system", categories=["system", "billing"])
    hook("all")
    [links] = send(client, producer, runtime, category="links")
    [system] = send(client, producer, runtime, category="system")
    [other] = send(client, producer, runtime, category="other")

    got = {(r.path, r.json["data"]["id"]) for r in webhook_receiver.deliveries}
    assert got == {
        ("/links", links),
        ("/system", system),
        ("/all", links),
        ("/all", system),
        ("/all", other),
    }


def test_a_category_without_endpoints_skips_with_the_reason(client, runtime, producer, hook):
    hook(categories=["links"])
    [nid] = send(client, producer, runtime, category="billing")

    [delivery] = deliveries(runtime, nid)
    assert (delivery.status, delivery.last_error) == (
        "skipped",
        "no webhook endpoint for this category",
    )


def test_two_endpoints_each_get_every_recipients_notification(
    client, runtime, producer, hook, webhook_receiver
):
    hook("a")
    hook("b")
    ids = send(client, producer, runtime, recipients=["ada", "bob"])

    got = sorted((r.path, r.json["data"]["id"]) for r in webhook_receiver.deliveries)
    assert got == sorted((path, nid) for path in ("/a", "/b") for nid in ids)
    assert len({r.id for r in webhook_receiver.deliveries}) == 4  # one delivery id each
    assert {d.status for d in deliveries(runtime)} == {"sent"}


def test_a_retry_after_503_has_the_same_id_and_a_fresh_valid_signature(
    client, runtime, producer, hook, webhook_receiver
):
    hook()
    webhook_receiver.answer(503, body="busy")
    [nid] = send(client, producer, runtime)

    first, second = webhook_receiver.requests
    [delivery] = deliveries(runtime, nid)
    assert first.status == 503 and first.verified
    assert second.status == 200 and second.verified
    assert first.id == second.id == str(delivery.id)
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    tries = attempts(runtime, delivery.id)
    assert [(a.outcome, a.error) for a in tries] == [
        ("retry", "HTTP 503 Service Unavailable"),
        ("sent", None),
    ]


def test_a_timeout_is_retried_with_the_same_id(client, runtime, producer, hook, webhook_receiver):
    hook()
    webhook_receiver.answer(200, delay=TIMEOUT * 3)  # processed, but answered too late
    [nid] = send(client, producer, runtime)

    [delivery] = deliveries(runtime, nid)
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    tries = attempts(runtime, delivery.id)
    assert tries[0].outcome == "retry" and "no answer within 0.5 s" in tries[0].error
    # At-least-once: the receiver saw it twice, and de-duplicates by webhook-id.
    assert [r.id for r in webhook_receiver.requests] == [str(delivery.id)] * 2


def test_410_deactivates_the_endpoint(client, runtime, producer, admin, hook, webhook_receiver):
    endpoint = hook()
    webhook_receiver.answer(410, body="unsubscribed")
    [first] = send(client, producer, runtime)
    [second] = send(client, producer, runtime)

    [gone] = deliveries(runtime, first)
    assert gone.status == "skipped" and "HTTP 410" in gone.last_error
    shown = client.get(f"{HOOKS}/{endpoint['id']}", headers=admin).json()
    assert shown["active"] is False and shown["deactivated_at"]
    assert shown["last_error"] == "HTTP 410 Gone (endpoint deactivated)"
    [later] = deliveries(runtime, second)
    assert later.last_error == "no webhook endpoint for this category"
    assert len(webhook_receiver.requests) == 1


def test_400_is_dead_at_once_with_a_dead_letter(client, runtime, producer, hook, webhook_receiver):
    hook()
    webhook_receiver.answer(400, body="schema mismatch: " + "x" * 2000)
    [nid] = send(client, producer, runtime)

    [delivery] = deliveries(runtime, nid)
    assert (delivery.status, delivery.attempts) == ("dead", 1)
    with runtime.sessions() as s:
        [letter] = s.scalars(select(DeadLetter))
    assert letter.delivery_id == delivery.id and letter.channel == "webhook"
    assert letter.error == "HTTP 400 Bad Request"  # the status, never the body
    assert len(webhook_receiver.requests) == 1


def test_a_redirect_is_not_followed_and_is_permanent(
    client, runtime, producer, hook, webhook_receiver
):
    hook()
    webhook_receiver.answer(308)
    [nid] = send(client, producer, runtime)

    [delivery] = deliveries(runtime, nid)
    assert delivery.status == "dead" and "redirects are not followed" in delivery.last_error
    assert len(webhook_receiver.requests) == 1


def test_a_deleted_endpoint_skips_its_pending_deliveries(
    client, runtime, producer, admin, hook, webhook_receiver
):
    endpoint = hook()
    [nid] = send(client, producer, runtime, drained=False)
    drain(runtime.celery, names=("create",))
    assert client.delete(f"{HOOKS}/{endpoint['id']}", headers=admin).status_code == 204
    drain(runtime.celery)

    [delivery] = deliveries(runtime, nid)
    assert delivery.status == "skipped" and "removed or deactivated" in delivery.last_error
    assert webhook_receiver.requests == []


def test_a_rotated_secret_signs_new_sends(client, runtime, producer, admin, hook, webhook_receiver):
    endpoint = hook()
    rotated = client.post(f"{HOOKS}/{endpoint['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != endpoint["secret"] and new.startswith("whsec_")

    send(client, producer, runtime)  # the receiver still trusts the old secret

    [refused] = webhook_receiver.rejected
    assert refused.status == 400
    Webhook(new).verify(refused.body, refused.headers)  # signed with the new one
    webhook_receiver.trust(webhook_receiver.url(), new)
    send(client, producer, runtime)
    assert len(webhook_receiver.deliveries) == 1


# -- the channel on its own, against the same receiver ------------------------------------
def message() -> Message:
    notification = {"id": str(uuid.uuid4()), "category": "links", "title": "t"}
    return Message(uuid.uuid4(), 1, notification, {"id": "ada"})


@pytest.fixture
def channel(runtime):
    sender = WebhookChannel(runtime.settings)
    yield sender
    sender.close()


@pytest.fixture
def target(webhook_receiver):
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    webhook_receiver.trust(webhook_receiver.url(), secret)
    return {"url": webhook_receiver.url(), "secret": secret}


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [
        (Answer(429, retry_after="7"), 7.0),
        (Answer(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"), 0.0),  # in the past
        (Answer(502), None),
        (Answer(408), None),
    ],
    ids=["429-seconds", "503-date", "502", "408"],
)
def test_retryable_answers_carry_retry_after(
    channel, target, webhook_receiver, answer, retry_after
):
    webhook_receiver.answer(answer.status, retry_after=answer.retry_after)
    with pytest.raises(RetryableChannelError) as raised:
        channel.send(channel.render(message(), target), target)
    assert raised.value.retry_after == retry_after


def test_an_unreachable_endpoint_is_retryable_and_a_bad_url_permanent(channel, target):
    closed = {**target, "url": "http://127.0.0.1:9/hook"}  # discard port: nothing listens
    with pytest.raises(RetryableChannelError):
        channel.send(channel.render(message(), closed), closed)
    bad = {**target, "url": "http://exa mple.test:x/"}
    with pytest.raises(PermanentChannelError):
        channel.send(channel.render(message(), bad), bad)


def test_sends_reuse_one_keep_alive_connection(channel, target, webhook_receiver):
    for _ in range(3):
        assert channel.send(channel.render(message(), target), target) == "HTTP 200"
    ports = {r.peer_port for r in webhook_receiver.deliveries}
    assert len(webhook_receiver.deliveries) == 3 and len(ports) == 1


def test_render_is_signed_per_standard_webhooks(channel, target):
    msg = message()
    payload = channel.render(msg, target)

    event = Webhook(target["secret"]).verify(payload.body, payload.headers)
    assert payload.headers["webhook-id"] == str(msg.delivery_id)
    assert event["data"]["recipient"] == {"id": "ada"}
    assert b" " not in payload.body  # compact


# -- the admin API ---------------------------------------------------------------------
def test_crud(client, admin):
    created = client.post(
        HOOKS,
        json={"url": "https://hooks.example/a", "categories": ["links"], "description": "ops"},
        headers=admin,
    )
    assert created.status_code == 201
    endpoint = created.json()
    key = base64.b64decode(endpoint["secret"].removeprefix("whsec_"))
    assert endpoint["secret"].startswith("whsec_") and 24 <= len(key) <= 32
    assert endpoint["active"] is True and endpoint["categories"] == ["links"]
    url = f"{HOOKS}/{endpoint['id']}"

    listed = client.get(HOOKS, headers=admin).json()
    shown = client.get(url, headers=admin).json()
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0] and "secret" not in shown
    assert shown["description"] == "ops"

    patched = client.patch(
        url,
        json={"url": "http://hooks.example/b", "categories": [], "description": None},
        headers=admin,
    ).json()
    assert (patched["url"], patched["categories"], patched["description"]) == (
        "http://hooks.example/b",
        [],
        None,
    )
    off = client.patch(url, json={"active": False}, headers=admin).json()
    assert off["active"] is False and off["deactivated_at"]
    on = client.patch(url, json={"active": True}, headers=admin).json()
    assert on["active"] is True and on["deactivated_at"] is None and on["last_error"] is None

    assert client.delete(url, headers=admin).status_code == 204
    assert client.get(url, headers=admin).status_code == 404
    assert client.get(HOOKS, headers=admin).json() == []


def test_reactivating_clears_a_deactivation_by_410(client, runtime, admin, hook):
    endpoint = hook()
    with runtime.sessions() as s, s.begin():
        row = s.get(WebhookEndpoint, uuid.UUID(endpoint["id"]))
        row.deactivated_at, row.last_error = row.created_at, "HTTP 410"
    url = f"{HOOKS}/{endpoint['id']}"

    assert client.get(url, headers=admin).json()["last_error"] == "HTTP 410"
    on = client.patch(url, json={"active": True}, headers=admin).json()
    assert on["active"] is True and on["last_error"] is None


def test_unknown_endpoints_are_404_problems(client, admin):
    url = f"{HOOKS}/{uuid.uuid4()}"
    responses = [
        client.get(url, headers=admin),
        client.patch(url, json={"active": True}, headers=admin),
        client.delete(url, headers=admin),
        client.post(f"{url}/rotate-secret", headers=admin),
    ]
    for response in responses:
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:clarion:problem:not-found"


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "ftp://hooks.example/a"},
        {"url": "/relative"},
        {"url": "https://hooks.example/" + "a" * 2048},
        {"url": "https://hooks.example/a", "categories": ["not a slug"]},
        {"url": "https://hooks.example/a", "categories": ["a", "a"]},
        {"url": "https://hooks.example/a", "secret": "whsec_mine"},
        {"categories": []},
    ],
    ids=["scheme", "relative", "too-long", "slug", "repeated", "unknown-field", "no-url"],
)
def test_bad_input_is_422(client, admin, bad):
    response = client.post(HOOKS, json=bad, headers=admin)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("bad", [{"url": None}, {"active": None}, {"url": "mailto:a@b.c"}])
def test_bad_patches_are_422(client, admin, hook, bad):
    endpoint = hook()
    response = client.patch(f"{HOOKS}/{endpoint['id']}", json=bad, headers=admin)
    assert response.status_code == 422


def test_a_notify_key_is_403_and_no_key_401(client, producer):
    assert client.get(HOOKS, headers=producer).status_code == 403
    post = client.post(HOOKS, json={"url": "https://hooks.example/a"}, headers=producer)
    assert post.status_code == 403
    assert post.headers["content-type"] == "application/problem+json"
    assert client.get(HOOKS).status_code == 401


def test_endpoints_beyond_the_cap_are_409(make_runtime, webhook_receiver):
    from fastapi.testclient import TestClient

    from clarion.api.app import create_app

    rt = make_runtime(webhook_max_endpoints=2)
    admin = {"Authorization": f"Bearer {make_key(rt, 'admin')}"}
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as client:
        made = [
            client.post(HOOKS, json={"url": webhook_receiver.url(n)}, headers=admin)
            for n in ("a", "b", "c")
        ]
        assert [r.status_code for r in made] == [201, 201, 409]
        assert made[2].json()["type"] == "urn:clarion:problem:webhook-limit-reached"
        assert len(client.get(HOOKS, headers=admin).json()) == 2
        # Deleting one makes room again.
        client.delete(f"{HOOKS}/{made[0].json()['id']}", headers=admin)
        again = client.post(HOOKS, json={"url": webhook_receiver.url("c")}, headers=admin)
        assert again.status_code == 201
