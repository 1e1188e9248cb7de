"""The activities pack end to end: POST /v1/events → broker → ingest → event rules → inbox,
on real Redis and PostgreSQL. Resends create nothing twice; malformed events are recorded
as their run's error and block nothing else."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from clarion.db.models import Event, Notification, RuleRun
from tests.broker import drain
from tests.conftest import server_settings

EVENTS = "/v1/events"
RULES = {
    "activities": {
        "admins": ["root-admin"],
        "signup_recipients": ["operators"],
        "renotify_seconds": 3600,
    }
}


@pytest.fixture
def settings(pg_url, redis_client):
    """The runtime (and so ``client``) of these tests runs with the pack's config."""
    return server_settings(pg_url, rules=RULES)


def send(client, producer, type_, data, **fields):
    event = {"id": str(uuid.uuid4()), "type": type_, "data": data, **fields}
    response = client.post(EVENTS, json=event, headers=producer)
    assert response.status_code == 202, response.text
    return event


def notified(runtime):
    with runtime.sessions() as s:
        rows = s.scalars(
            select(Notification).order_by(Notification.type, Notification.recipient_id)
        ).all()
    return [(n.type, n.recipient_id) for n in rows], {(n.type, n.recipient_id): n for n in rows}


def runs(runtime):
    with runtime.sessions() as s:
        return s.execute(
            select(RuleRun.rule_key, RuleRun.created, RuleRun.error).order_by(RuleRun.id)
        ).all()


def test_member_invited_tells_the_invitee_and_the_admins_once(client, runtime, producer):
    event = send(
        client,
        producer,
        "member.invited",
        {
            "invitee": "zed",
            "admins": ["ada", "bob", "zed"],
            "workspace_name": "Acme",
            "role": "editor",
        },
        subject="ws-7",
        actor="ada",
    )
    client.post(EVENTS, json=event, headers=producer)  # the producer retries
    drain(runtime.celery)

    pairs, by = notified(runtime)
    # The inviter is not told of her own invitation; the invitee gets the invitee's text.
    assert pairs == [("member_invited", "bob"), ("member_invited", "zed")]
    zed, bob = by["member_invited", "zed"], by["member_invited", "bob"]
    assert (zed.category, zed.title, zed.actor_id) == (
        "activities",
        "You're invited to Acme",
        "ada",
    )
    assert zed.body == "ada invited you to join Acme as editor."
    assert bob.title == "zed was invited to Acme" and bob.severity == "low"
    assert zed.dedupe_key == bob.dedupe_key == f"activities:member_invited:{event['id']}"
    assert zed.meta["event_id"] == event["id"] and zed.meta["workspace"] == "ws-7"
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1
    assert [(k, created) for k, created, _ in runs(runtime)] == [
        ("member_invited", 2),
        ("member_invited", 0),
    ]


def test_member_invited_without_admins_in_the_event_tells_the_configured_admins(
    client, runtime, producer
):
    send(client, producer, "member.invited", {"invitee": "zed"}, subject="ws-7")
    drain(runtime.celery)

    pairs, by = notified(runtime)
    assert pairs == [("member_invited", "root-admin"), ("member_invited", "zed")]
    assert by["member_invited", "zed"].body == "Someone invited you to join ws-7."


def test_both_signup_event_types_notify_the_owners_and_the_configured_recipients(
    client, runtime, producer
):
    send(
        client,
        producer,
        "user.signed_up",
        {"email": "eve@example.test", "name": "Eve", "owners": ["ada"]},
        actor="eve",
        subject="ws-7",
    )
    send(client, producer, "signup", {"user": "fay"})
    drain(runtime.celery)

    _, by = notified(runtime)
    assert sorted(by) == [
        ("new_signup", "ada"),
        ("new_signup", "operators"),
    ]
    with runtime.sessions() as s:
        titles = s.scalars(
            select(Notification.title).where(Notification.recipient_id == "operators")
        ).all()
    assert sorted(titles) == ["New signup: Eve", "New signup: fay"]
    assert by["new_signup", "ada"].body == "Eve (eve@example.test, eve) signed up to ws-7."
    assert {k for k, _, _ in runs(runtime)} == {"new_signup", "new_signup.signup"}


def test_integration_connected_and_failing_renotifies_at_most_once_per_window(
    client, runtime, producer
):
    owners = {"owners": ["ada", "bob"]}
    send(
        client,
        producer,
        "integration.connected",
        {"integration": "slack-1", "name": "Slack", **owners},
    )
    for minute, error in ((1, "401 from Slack"), (20, "401 again"), (59, "still 401")):
        send(
            client,
            producer,
            "integration.failed",
            {"integration": "slack-1", "name": "Slack", "error": error, **owners},
            occurred_at=f"2026-11-25T10:{minute:02d}:00Z",
        )
    send(  # the next window
        client,
        producer,
        "integration.failed",
        {"integration": "slack-1", "name": "Slack", "error": "timeout", **owners},
        occurred_at="2026-11-25T11:00:00Z",
    )
    send(  # another integration, same window, owners from the subject's event
        client,
        producer,
        "integration.failed",
        {"owners": ["cy"]},
        subject="github-2",
        occurred_at="2026-11-25T10:30:00Z",
    )
    drain(runtime.celery)

    with runtime.sessions() as s:
        rows = s.scalars(
            select(Notification).order_by(Notification.recipient_id, Notification.id)
        ).all()
    got = [(n.type, n.recipient_id, n.body) for n in rows]
    assert got == [
        ("integration_connected", "ada", "Someone connected Slack."),
        ("integration_failing", "ada", "Slack failed: 401 from Slack"),
        ("integration_failing", "ada", "Slack failed: timeout"),
        ("integration_connected", "bob", "Someone connected Slack."),
        ("integration_failing", "bob", "Slack failed: 401 from Slack"),
        ("integration_failing", "bob", "Slack failed: timeout"),
        ("integration_failing", "cy", "github-2 failed."),
    ]
    failing = [n for n in rows if n.type == "integration_failing"]
    assert {n.severity for n in failing} == {"high"}
    assert failing[0].dedupe_key == "activities:integration_failing:slack-1:20261125T100000Z"
    assert failing[0].title == "Slack is failing"


def test_a_malformed_event_is_the_runs_error_and_blocks_nothing(client, runtime, producer):
    send(client, producer, "member.invited", {"admins": ["ada"]})  # no invitee
    send(client, producer, "member.invited", {"invitee": ["not", "an", "id"]})
    send(client, producer, "integration.failed", {"integration": "slack-1"})  # no owners
    good = send(client, producer, "member.invited", {"invitee": "zed", "admins": []})
    drain(runtime.celery)

    pairs, _ = notified(runtime)
    assert pairs == [("member_invited", "zed")]
    errors = sorted(e for _, _, e in runs(runtime) if e)
    assert len(errors) == 3
    assert any("data.invitee: Field required" in e for e in errors)
    assert any("data.invitee: Input should be a valid string" in e for e in errors)
    assert any("has nobody to notify: no data.owners" in e for e in errors)
    assert all(e.startswith("MalformedEvent: event ") for e in errors)
    with runtime.sessions() as s:  # every event is stored, the good one included
        assert s.scalar(select(func.count()).select_from(Event)) == 4
        assert s.get(Event, uuid.UUID(good["id"])) is not None


@pytest.mark.parametrize(
    "body",
    [
        {"type": "member invited", "data": {"invitee": "zed"}},  # not a slug
        {"type": "member.invited", "data": ["zed"]},  # data is an object
        {"type": "member.invited", "invitee": "zed"},  # unknown top-level field
        {"type": "member.invited", "id": "not-a-uuid"},
        {"data": {"invitee": "zed"}},  # no type
    ],
)
def test_a_bad_event_body_is_a_422_problem(client, runtime, producer, body):
    response = client.post(EVENTS, json=body, headers=producer)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "urn:clarion:problem:validation-error"
    assert problem["errors"]
    assert drain(runtime.celery) == 0  # nothing was enqueued


def test_each_recipient_reads_the_invitation_in_their_own_language(client, runtime, producer):
    response = client.put("/v1/subscribers/ivan", json={"locale": "ru-RU"}, headers=producer)
    assert response.status_code == 200
    send(
        client,
        producer,
        "member.invited",
        {"invitee": "ivan", "admins": ["bob"], "workspace_name": "Acme", "role": "editor"},
        actor="ada",
    )
    drain(runtime.celery)

    _, by = notified(runtime)
    ivan, bob = by["member_invited", "ivan"], by["member_invited", "bob"]
    assert (ivan.title, ivan.body) == (
        "Вас пригласили в Acme",
        "ada приглашает вас в Acme с ролью editor.",
    )
    assert (bob.title, bob.body) == (
        "ivan was invited to Acme",
        "ada invited ivan to Acme as editor.",
    )
    assert ivan.template == "member_invited" and bob.template == "member_invited.admins"
