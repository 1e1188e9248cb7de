"""Producer API → broker → create task → PostgreSQL, on real Redis and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from clarion.db.models import Delivery, Notification
from tests.broker import drain, queued

SEND = "/v1/notifications"


def body(**overrides):
    return {"recipients": ["alice"], "category": "links", "title": "Your link expires", **overrides}


def test_send_answers_202_with_ids_and_enqueues_one_create_task(client, runtime, producer):
    response = client.post(SEND, json=body(recipients=["alice", "bob"]), headers=producer)

    assert response.status_code == 202
    answer = response.json()
    assert [n["recipient"] for n in answer["notifications"]] == ["alice", "bob"]
    ids = [uuid.UUID(n["id"]) for n in answer["notifications"]]
    assert all(i.version == 7 for i in ids)
    assert queued(runtime.celery) == 1
    # Nothing is in the database until a worker runs the task: the API never writes a send.
    with runtime.sessions() as s:
        assert s.query(Notification).count() == 0

    drain(runtime.celery)

    with runtime.sessions() as s:
        rows = {r.id: r for r in s.query(Notification)}
    assert set(rows) == set(ids)
    assert {r.recipient_id for r in rows.values()} == {"alice", "bob"}
    assert all(r.request_id == uuid.UUID(answer["request_id"]) for r in rows.values())


def test_sent_notification_reaches_the_inbox_with_every_field(client, runtime, producer, user):
    sent = body(
        type="link_expiring_soon",
        severity="high",
        body="Tomorrow.",
        url="https://x.test/l/1",
        metadata={"link_id": 1},
        actor_id="system",
    )
    nid = client.post(SEND, json=sent, headers=producer).json()["notifications"][0]["id"]
    drain(runtime.celery)

    items = client.get("/v1/me/notifications", headers=user("alice")).json()["items"]

    assert len(items) == 1
    item = items[0]
    assert item["id"] == nid
    for field in ("category", "type", "severity", "title", "body", "url", "metadata", "actor_id"):
        assert item[field] == sent[field]
    assert item["read_at"] is None and item["created_at"].endswith("Z")


def test_status_shows_deliveries_per_channel(client, runtime, producer):
    answer = client.post(SEND, json=body(channels=["in_app", "email"]), headers=producer).json()
    nid = answer["notifications"][0]["id"]
    drain(runtime.celery)

    status = client.get(f"{SEND}/{nid}", headers=producer)

    assert status.status_code == 200
    deliveries = {d["channel"]: d for d in status.json()["deliveries"]}
    # The in-app delivery is the stored notification itself: sent, one attempt, no error.
    assert deliveries["in_app"]["status"] == "sent"
    assert deliveries["in_app"]["attempts"] == 1 and deliveries["in_app"]["last_error"] is None
    assert deliveries["in_app"]["created_at"] == status.json()["created_at"]
    assert list(deliveries) == ["email", "in_app"]  # by channel, as stored ones are
    # No email channel is configured in this deployment: skipped, and says why.
    assert deliveries["email"]["status"] == "skipped"
    assert "email is not configured" in deliveries["email"]["last_error"]


def test_channels_default_per_category_and_explicit_list_can_drop_the_inbox(
    client, runtime, producer, pg_url
):
    from tests.conftest import server_settings

    runtime.settings = server_settings(pg_url, category_channels={"campaigns": ["email"]})
    client.post(SEND, json=body(category="campaigns", recipients=["a"]), headers=producer)
    client.post(SEND, json=body(recipients=["b"], channels=["email"]), headers=producer)
    drain(runtime.celery)

    with runtime.sessions() as s:
        shown = {n.recipient_id: n.in_inbox for n in s.scalars(select(Notification))}
        stored = {
            (n.recipient_id, d.channel)
            for n, d in s.query(Notification, Delivery).join(
                Delivery, Delivery.notification_id == Notification.id
            )
        }
    # The inbox is always a candidate of a category's defaults; an explicit list can drop it.
    assert shown == {"a": True, "b": False}
    # The inbox delivery is the notification row itself: only the email rows are stored.
    assert stored == {("a", "email"), ("b", "email")}


def test_unknown_recipients_become_bare_subscribers(client, runtime, producer):
    client.post(SEND, json=body(recipients=["new-user"]), headers=producer)
    drain(runtime.celery)

    profile = client.get("/v1/subscribers/new-user", headers=producer)

    assert profile.status_code == 200
    assert profile.json()["email"] is None


def test_status_of_unknown_notification_is_404_problem(client, producer):
    response = client.get(f"{SEND}/{uuid.uuid4()}", headers=producer)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_concurrent_sends_are_coalesced_into_fewer_tasks_and_all_land(client, runtime, producer):
    import threading

    answers = []

    def post(i):
        answers.append(client.post(SEND, json=body(recipients=[f"u{i}"]), headers=producer))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [a.status_code for a in answers] == [202] * 30
    tasks = queued(runtime.celery)
    assert tasks < 30
    assert drain(runtime.celery) == tasks
    ids = {uuid.UUID(a.json()["notifications"][0]["id"]) for a in answers}
    with runtime.sessions() as s:
        assert {r.id for r in s.query(Notification)} == ids


# --- idempotency ----------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_answer_and_enqueues_once(
    client, runtime, producer
):
    headers = {**producer, "Idempotency-Key": "order-7"}
    first = client.post(SEND, json=body(), headers=headers)
    second = client.post(SEND, json=body(), headers=headers)

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert queued(runtime.celery) == 1


def test_same_idempotency_key_with_another_body_is_409(client, runtime, producer):
    headers = {**producer, "Idempotency-Key": "order-8"}
    client.post(SEND, json=body(), headers=headers)

    response = client.post(SEND, json=body(title="Something else"), headers=headers)

    assert response.status_code == 409
    assert response.json()["type"] == "urn:clarion:problem:idempotency-key-reused"
    assert queued(runtime.celery) == 1


def test_an_unexpected_publish_error_releases_the_idempotency_key(client, runtime, producer):
    coalescer = client.app.state.coalescer
    publish = coalescer._publish
    coalescer._publish = lambda messages: 1 / 0
    headers = {**producer, "Idempotency-Key": "order-9"}

    assert client.post(SEND, json=body(), headers=headers).status_code == 500
    coalescer._publish = publish
    assert client.post(SEND, json=body(), headers=headers).status_code == 202
    assert queued(runtime.celery) == 1


def test_idempotency_keys_belong_to_one_api_key(client, runtime, producer):
    from tests.conftest import make_key

    other = {"Authorization": f"Bearer {make_key(runtime, 'notify')}", "Idempotency-Key": "k"}
    a = client.post(SEND, json=body(), headers={**producer, "Idempotency-Key": "k"})
    b = client.post(SEND, json=body(title="Different"), headers=other)

    assert a.status_code == b.status_code == 202
    assert a.json()["request_id"] != b.json()["request_id"]


# --- bad input: a clear 4xx and nothing enqueued ---------------------------------------


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (body(metadata={"blob": "x" * 17_000}), "metadata"),
        (body(recipients=[f"u{i}" for i in range(1001)]), "recipients"),
        (body(recipients=[]), "recipients"),
        (body(recipients=["a", "a"]), "recipients"),
        (body(surprise=True), "surprise"),
        (body(title=42), "title"),
        (body(recipients="alice"), "recipients"),
        (body(severity="apocalyptic"), "severity"),
        (body(channels=["pigeon"]), "channels"),
        (body(category="has spaces"), "category"),
        ({"recipients": ["alice"], "category": "links"}, "title"),
    ],
    ids=[
        "metadata>16KiB",
        "1001-recipients",
        "no-recipients",
        "repeated-recipient",
        "unknown-field",
        "wrong-type",
        "recipients-not-a-list",
        "bad-severity",
        "unknown-channel",
        "bad-category",
        "missing-title",
    ],
)
def test_bad_input_is_a_422_problem_and_nothing_is_enqueued(
    client, runtime, producer, payload, where
):
    response = client.post(SEND, json=payload, headers=producer)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:clarion:problem:validation-error"
    assert any(where in e["loc"] for e in problem["errors"])
    assert queued(runtime.celery) == 0


def test_malformed_json_is_400_and_nothing_is_enqueued(client, runtime, producer):
    response = client.post(
        SEND, content=b'{"recipients": [', headers={**producer, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "urn:clarion:problem:malformed-json"
    assert queued(runtime.celery) == 0


def test_oversized_body_is_413(client, runtime, producer):
    huge = json.dumps(body(body="x" * (2 * 1024 * 1024)))
    response = client.post(
        SEND, content=huge, headers={**producer, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert queued(runtime.celery) == 0


# --- authentication --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer clk_not-a-key"}, {"Authorization": "Basic YTpi"}],
    ids=["missing", "unknown", "wrong-scheme"],
)
def test_send_without_a_valid_key_is_401(client, runtime, headers):
    response = client.post(SEND, json=body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert queued(runtime.celery) == 0


def test_revoked_key_is_refused(client, runtime, producer):
    from clarion.core.auth import revoke_api_key
    from clarion.db.session import transaction

    assert client.post(SEND, json=body(), headers=producer).status_code == 202
    with transaction(runtime.sessions) as s:
        revoke_api_key(session=s, id=1)
    assert client.post(SEND, json=body(), headers=producer).status_code == 401


def test_an_admin_key_can_do_what_a_notify_key_can(client, runtime):
    from tests.conftest import make_key

    admin = {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}
    nid = client.post(SEND, json=body(), headers=admin).json()["notifications"][0]["id"]
    drain(runtime.celery)

    assert client.get(f"{SEND}/{nid}", headers=admin).status_code == 200
    assert client.put("/v1/subscribers/ada", json={}, headers=admin).status_code == 200


def test_a_user_token_is_not_an_api_key(client, user):
    assert client.post(SEND, json=body(), headers=user("alice")).status_code == 401
