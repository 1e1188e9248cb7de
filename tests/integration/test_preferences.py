"""Preferences through the API, and the routing they drive through the real create task,
the real deliver step, the real sweeper and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from clarion.api.app import create_app
from clarion.channels import INBOX as INBOX_CHANNEL
from clarion.core import deliver, sweeper
from clarion.core.auth import issue_user_token
from clarion.core.pubsub import decode
from clarion.db import notifications
from clarion.db.models import Delivery, Notification
from clarion.ids import utcnow
from tests.broker import drain
from tests.channels import FAST_RETRY
from tests.channels.smtp import give_email
from tests.conftest import make_key

ME = "/v1/me/preferences"
ROUTING = {
    "category_channels": {"campaigns": ["in_app", "email"], "security": ["in_app", "email"]},
    "required_categories": ["security"],
    "category_digest": {"newsletter": "daily"},
}


@pytest.fixture
def rt(make_runtime, smtp_server):
    return make_runtime(**FAST_RETRY, **smtp_server.settings(), **ROUTING)


@pytest.fixture
def api(rt):
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def keys(rt):
    return {
        scope: {"Authorization": f"Bearer {make_key(rt, scope)}"} for scope in ("notify", "admin")
    }


def as_user(rt, subscriber: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_user_token(rt.settings, subscriber)}"}


def set_prefs(api, rt, subscriber: str, body: dict) -> dict:
    answer = api.put(ME, json=body, headers=as_user(rt, subscriber))
    assert answer.status_code == 200, answer.text
    return answer.json()


def send(api, keys, recipients, **fields) -> list[str]:
    """POST a notification, then run the queued create and deliver tasks."""
    body = {"recipients": list(recipients), "category": "campaigns", "title": "Hi", **fields}
    answer = api.post("/v1/notifications", json=body, headers=keys["notify"])
    assert answer.status_code == 202, answer.text
    drain(api.app.state.runtime.celery)
    ids = {n["recipient"]: n["id"] for n in answer.json()["notifications"]}
    return [ids[r] for r in recipients]


def routed(rt, nid) -> dict[str, tuple[str, str | None]]:
    """Each channel's (status, reason), the in-app one as the status API shows it."""
    with rt.sessions() as s:
        rows = notifications.deliveries_of(
            session=s, notification=s.get(Notification, nid), inbox=INBOX_CHANNEL
        )
    return {d.channel: (d.status, d.last_error) for d in rows}


def delivery(rt, nid, channel="email") -> Delivery:
    with rt.sessions() as s:
        return s.scalars(
            select(Delivery).where(Delivery.notification_id == nid, Delivery.channel == channel)
        ).one()


def mailed(smtp_server) -> list[tuple[str, str]]:
    return sorted((m.recipients[0], m.message["Subject"]) for m in smtp_server.messages)


def inbox_titles(api, rt, subscriber: str) -> list[str]:
    page = api.get("/v1/me/notifications", headers=as_user(rt, subscriber)).json()
    return [item["title"] for item in page["items"]]


# -- the API -------------------------------------------------------------------------


def test_defaults_come_from_settings_and_required_categories_are_locked(api, rt):
    shown = api.get(ME, headers=as_user(rt, "ada")).json()

    assert shown["timezone"] is None and shown["quiet_hours"] is None
    assert shown["critical_bypasses"] is True
    # Every subscriber-controlled channel of the registry; no webhook.
    assert set(shown["channels"]) == {"in_app", "email", "push", "chat", "sms"}
    assert set(shown["categories"]) == {"campaigns", "security", "newsletter"}
    campaigns = shown["categories"]["campaigns"]
    assert campaigns["required"] is False
    assert campaigns["channels"]["email"] == {"enabled": True, "locked": False, "default": True}
    assert campaigns["channels"]["push"] == {"enabled": False, "locked": False, "default": False}
    security = shown["categories"]["security"]
    assert security["required"] is True
    assert {c: t["locked"] for c, t in security["channels"].items()} == dict.fromkeys(
        ("in_app", "email", "push", "chat", "sms"), True
    )
    assert shown["categories"]["newsletter"]["digest"] == {
        "cadence": "daily",
        "at": "09:00",
        "weekday": None,
    }


def test_put_is_partial_returns_everything_and_null_clears(api, rt):
    first = set_prefs(
        api,
        rt,
        "ada",
        {
            "timezone": "Europe/Berlin",
            "quiet_hours": {"start": "22:00", "end": "07:00"},
            "channels": {"push": False},
            "categories": {
                "campaigns": {"channels": {"email": False}, "digest": {"cadence": "hourly"}},
                "links": {"channels": {"push": True}},
            },
        },
    )
    assert first["timezone"] == "Europe/Berlin"
    assert first["channels"]["push"] == {"enabled": False, "locked": False}
    assert first["categories"]["links"]["channels"]["push"]["enabled"] is True  # now known
    assert first["categories"]["campaigns"]["channels"]["email"]["enabled"] is False

    second = set_prefs(
        api,
        rt,
        "ada",
        {
            "quiet_hours": None,
            "categories": {"campaigns": {"digest": {"cadence": "weekly", "weekday": 4}}},
        },
    )
    assert second["quiet_hours"] is None and second["timezone"] == "Europe/Berlin"
    assert second["channels"]["push"]["enabled"] is False  # untouched
    assert second["categories"]["campaigns"]["channels"]["email"]["enabled"] is False
    assert second["categories"]["campaigns"]["digest"] == {
        "cadence": "weekly",
        "at": "09:00",
        "weekday": 4,
    }
    assert api.get(ME, headers=as_user(rt, "ada")).json() == second
    # Another subscriber is not affected.
    assert api.get(ME, headers=as_user(rt, "bob")).json()["timezone"] is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"channels": {"webhook": False}}, ["body", "channels", "webhook", "[key]"]),
        ({"channels": {"fax": True}}, ["body", "channels", "fax", "[key]"]),
        (
            {"categories": {"links": {"channels": {"fax": True}}}},
            ["body", "categories", "links", "channels", "fax", "[key]"],
        ),
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"quiet_hours": {"start": "7:00", "end": "08:00"}}, ["body", "quiet_hours", "start"]),
        ({"quiet_hours": {"start": "22:00", "end": "24:00"}}, ["body", "quiet_hours", "end"]),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, ["body", "quiet_hours"]),
        (
            {"categories": {"x": {"digest": {"cadence": "weekly", "weekday": 7}}}},
            ["body", "categories", "x", "digest", "weekday"],
        ),
        (
            {"categories": {"x": {"digest": {"cadence": "monthly"}}}},
            ["body", "categories", "x", "digest", "cadence"],
        ),
        (
            {"categories": {"x": {"digest": {"cadence": "hourly", "at": "09:00"}}}},
            ["body", "categories", "x", "digest"],
        ),
        ({"categories": {"bad category": {}}}, ["body", "categories", "bad category", "[key]"]),
        ({"language": "en"}, ["body", "language"]),
    ],
)
def test_bad_updates_are_422_naming_the_field_and_change_nothing(api, rt, body, where):
    before = api.get(ME, headers=as_user(rt, "ada")).json()
    answer = api.put(ME, json={"timezone": "Europe/Paris", **body}, headers=as_user(rt, "ada"))

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert where in [e["loc"] for e in answer.json()["errors"]]
    assert api.get(ME, headers=as_user(rt, "ada")).json() == before


def test_switching_a_locked_toggle_is_409_and_refuses_the_whole_update(api, rt):
    body = {
        "timezone": "Europe/Paris",
        "categories": {
            "security": {"channels": {"email": False}, "digest": {"cadence": "daily"}},
            "campaigns": {"channels": {"email": False}},
        },
    }
    answer = api.put(ME, json=body, headers=as_user(rt, "ada"))

    assert answer.status_code == 409
    problem = answer.json()
    assert problem["type"] == "urn:clarion:problem:preference-locked"
    assert problem["fields"] == ["categories.security.channels.email", "categories.security.digest"]
    shown = api.get(ME, headers=as_user(rt, "ada")).json()
    assert shown["timezone"] is None
    assert shown["categories"]["campaigns"]["channels"]["email"]["enabled"] is True
    # Echoing a locked toggle's current value is accepted.
    set_prefs(api, rt, "ada", {"categories": {"security": {"channels": {"email": True}}}})


def test_admins_read_and_write_anyones_preferences(api, rt, keys):
    path = "/v1/subscribers/zoe/preferences"
    assert api.get(path, headers=keys["admin"]).status_code == 404
    assert api.put(path, json={}, headers=keys["notify"]).status_code == 403
    assert api.get(path, headers=as_user(rt, "zoe")).status_code == 401

    written = api.put(path, json={"channels": {"email": False}}, headers=keys["admin"])
    assert written.status_code == 200 and written.json()["channels"]["email"]["enabled"] is False
    assert api.get(path, headers=keys["admin"]).json() == written.json()
    # What the operator set is what the subscriber sees.
    assert api.get(ME, headers=as_user(rt, "zoe")).json() == written.json()
    bad = api.put(path, json={"channels": {"webhook": True}}, headers=keys["admin"])
    assert bad.status_code == 422
    assert api.get(ME, headers=keys["admin"]).status_code == 401  # not a user token


def test_the_one_click_unsubscribe_shows_up_in_the_preferences(api, rt, keys, smtp_server):
    give_email(rt, "ada")
    send(api, keys, ["ada"])
    link = smtp_server.messages[0].message["List-Unsubscribe"].strip("<>")
    path = link[link.index("/v1/") :]
    assert api.post(path).status_code == 200

    shown = api.get(ME, headers=as_user(rt, "ada")).json()
    assert shown["categories"]["campaigns"]["channels"]["email"]["enabled"] is False
    [nid] = send(api, keys, ["ada"], title="again")
    assert routed(rt, nid)["email"] == ("skipped", "opted out")


# -- routing ---------------------------------------------------------------------------


def test_the_preference_matrix_through_create_and_deliver(api, rt, keys, smtp_server):
    people = ("ada", "bob", "cy", "dee")
    for p in people:
        give_email(rt, p)
    set_prefs(api, rt, "ada", {"categories": {"campaigns": {"channels": {"email": False}}}})
    set_prefs(api, rt, "bob", {"channels": {"email": False}})
    set_prefs(api, rt, "cy", {"categories": {"system": {"channels": {"email": True}}}})

    campaign = dict(zip(people, send(api, keys, people, title="Sale"), strict=True))
    system = dict(zip(people, send(api, keys, people, category="system", title="Sys"), strict=True))
    urgent = dict(
        zip(people, send(api, keys, people, title="Urgent", severity="critical"), strict=True)
    )
    alert = dict(
        zip(people, send(api, keys, people, category="security", title="Sec"), strict=True)
    )
    named = send(api, keys, ["cy"], category="system", title="Named", channels=["in_app"])

    opted_out = ("skipped", "opted out")
    assert [routed(rt, campaign[p])["email"] for p in people] == [
        opted_out,
        opted_out,
        ("sent", None),
        ("sent", None),
    ]
    # system defaults to the inbox only; cy switched email on for it.
    assert [set(routed(rt, system[p])) for p in people] == [{"in_app"}, {"in_app"}] + [
        {"in_app", "email"},
        {"in_app"},
    ]
    assert routed(rt, system["cy"])["email"] == ("sent", None)
    # A request naming its channels gets exactly those.
    assert set(routed(rt, named[0])) == {"in_app"}
    # Critical severity and the required category bypass both opt-outs.
    for batch in (urgent, alert):
        assert all(routed(rt, batch[p])["email"] == ("sent", None) for p in people)
    assert mailed(smtp_server) == sorted(
        [("cy@example.com", "Sale"), ("dee@example.com", "Sale"), ("cy@example.com", "Sys")]
        + [(f"{p}@example.com", "Urgent") for p in people]
        + [(f"{p}@example.com", "Sec") for p in people]
    )
    for p in people:  # the inbox is unaffected by email switches
        assert {"Sale", "Sys", "Urgent", "Sec"} <= set(inbox_titles(api, rt, p))


def test_in_app_switched_off_keeps_it_out_of_the_inbox_but_records_it(api, rt, keys, smtp_server):
    give_email(rt, "ada")
    set_prefs(api, rt, "ada", {"channels": {"in_app": False}})
    live = redis.Redis.from_url(rt.settings.redis_url).pubsub()
    live.subscribe(rt.pubsub.channel)
    live.get_message(timeout=1)  # the subscribe confirmation
    [quiet] = send(api, keys, ["ada"], title="Only by email")
    [urgent] = send(api, keys, ["ada"], title="Critical", severity="critical")

    announced = []
    while (m := live.get_message(timeout=0.5)) is not None:
        announced += [e["data"]["title"] for e in decode(m["data"])]
    assert announced == ["Critical"]

    assert routed(rt, quiet) == {"in_app": ("skipped", "opted out"), "email": ("sent", None)}
    with rt.sessions() as s:
        assert s.get(Notification, quiet).in_inbox is False
        assert s.get(Notification, urgent).in_inbox is True
    assert inbox_titles(api, rt, "ada") == ["Critical"]
    bell = api.get("/v1/me/notifications/unread-count", headers=as_user(rt, "ada")).json()
    assert bell["total"] == 1
    status = api.get(f"/v1/notifications/{quiet}", headers=keys["notify"]).json()
    assert {d["channel"]: d["last_error"] for d in status["deliveries"]}["in_app"] == "opted out"
    assert len(smtp_server.messages) == 2


def window_around(now: datetime, zone: str) -> tuple[dict, datetime]:
    """Quiet hours from an hour ago to an hour from now on the zone's clock; and their end."""
    local = now.astimezone(zoneinfo.ZoneInfo(zone))
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    ends = end.replace(second=0, microsecond=0).astimezone(UTC)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}, ends


def sweep(rt, now: datetime) -> dict[str, int]:
    return sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt, now=now)


def test_quiet_hours_defer_email_to_the_end_and_the_sweeper_sends_it(api, rt, keys, smtp_server):
    give_email(rt, "ada")
    zone = "America/New_York"
    window, ends = window_around(utcnow(), zone)
    set_prefs(api, rt, "ada", {"timezone": zone, "quiet_hours": window})

    [nid] = send(api, keys, ["ada"], title="Tonight's report")
    [urgent] = send(api, keys, ["ada"], title="Server down", severity="critical")

    row = delivery(rt, nid)
    assert row.status == "deferred" and row.next_attempt_at == ends
    assert row.last_error == f"deferred: quiet hours until {ends:%Y-%m-%dT%H:%M:%SZ}"
    assert routed(rt, nid)["in_app"] == ("sent", None)
    assert inbox_titles(api, rt, "ada") == ["Server down", "Tonight's report"]  # at once
    assert mailed(smtp_server) == [("ada@example.com", "Server down")]
    status = api.get(f"/v1/notifications/{nid}", headers=keys["notify"]).json()
    assert {d["channel"]: d["status"] for d in status["deliveries"]}["email"] == "deferred"

    # A deliver task reaching it early (a duplicate, a replay) cannot send it.
    early = deliver.deliver(
        [row.id],
        channel="email",
        sessions=rt.sessions,
        settings=rt.settings,
        channels=rt.channels,
        scheduler=rt,
    )
    assert early.sent == 0 and delivery(rt, nid).status == "deferred"
    assert sweep(rt, ends - timedelta(seconds=1)) == {}
    assert sweep(rt, ends) == {"deferred": 1}
    drain(rt.celery)
    assert delivery(rt, nid).status == "sent"
    assert mailed(smtp_server) == [
        ("ada@example.com", "Server down"),
        ("ada@example.com", "Tonight's report"),
    ]
    assert delivery(rt, urgent).status == "sent"


def test_a_deferred_delivery_is_claimed_by_deliver_once_due(api, rt, keys, smtp_server):
    give_email(rt, "ada")
    window, ends = window_around(utcnow(), "UTC")
    set_prefs(api, rt, "ada", {"quiet_hours": window})
    [nid] = send(api, keys, ["ada"])
    row = delivery(rt, nid)

    result = deliver.deliver(
        [row.id],
        channel="email",
        sessions=rt.sessions,
        settings=rt.settings,
        channels=rt.channels,
        scheduler=rt,
        clock=lambda: ends,
    )
    assert result.sent == 1 and delivery(rt, nid).status == "sent"
    assert len(smtp_server.messages) == 1


def test_a_digest_cadence_holds_email_until_the_period_ends(api, rt, keys, smtp_server):
    give_email(rt, "ada")
    give_email(rt, "bob")
    set_prefs(api, rt, "ada", {"categories": {"campaigns": {"digest": {"cadence": "hourly"}}}})
    set_prefs(api, rt, "bob", {"timezone": "Europe/Berlin"})

    [held, instant] = send(api, keys, ["ada", "bob"], title="Weekly deals")
    [daily] = send(api, keys, ["bob"], category="newsletter", title="News", channels=["email"])
    [digest] = send(api, keys, ["ada"], title="Your digest", type="digest")

    row = delivery(rt, held)
    top = row.created_at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert (row.status, row.last_error, row.next_attempt_at) == ("held", "digest: hourly", top)
    assert routed(rt, held)["in_app"] == ("sent", None)
    assert "Weekly deals" in inbox_titles(api, rt, "ada")
    # The operator's daily default for newsletters: 09:00 on bob's Berlin clock.
    row = delivery(rt, daily)
    nine = row.created_at.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    if nine <= row.created_at:
        nine = (nine + timedelta(days=1)).replace(hour=9)
    assert (row.status, row.last_error, row.next_attempt_at) == ("held", "digest: daily", nine)
    assert routed(rt, instant)["email"] == ("sent", None)
    assert routed(rt, digest)["email"] == ("sent", None)  # a digest is never held for one
    assert mailed(smtp_server) == [
        ("ada@example.com", "Your digest"),
        ("bob@example.com", "Weekly deals"),
    ]
    status = api.get(f"/v1/notifications/{held}", headers=keys["notify"]).json()
    assert {d["channel"]: d["last_error"] for d in status["deliveries"]}["email"] == (
        "digest: hourly"
    )
    # Held rows are the digest task's, never the sweeper's.
    assert sweep(rt, utcnow() + timedelta(days=2)) == {}
    assert delivery(rt, held).status == "held"


def test_one_batch_loads_preferences_in_a_fixed_number_of_queries(api, rt, keys):
    people = [f"u{i}" for i in range(300)]
    for p in people[:50]:
        set_prefs(api, rt, p, {"channels": {"in_app": False}})
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        ids = send(api, keys, people, category="system")
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    assert len(preference_reads(statements)) == 2
    with rt.sessions() as s:
        shown = s.scalars(select(Notification.in_inbox).where(Notification.id.in_(ids))).all()
    assert sorted(shown).count(False) == 50


def preference_reads(statements: list[str]) -> list[str]:
    # The subscribers' lock statement also asks whether each one stored anything (EXISTS):
    # the reads counted here are the SELECTs of the preference rows themselves.
    return [
        s
        for s in statements
        if s.lstrip().upper().startswith("SELECT")
        and ("FROM preferences" in s or "FROM category_preferences" in s)
    ]


def test_a_batch_whose_recipients_stored_no_preference_reads_no_preference_table(api, rt, keys):
    set_prefs(api, rt, "someone-else", {"channels": {"in_app": False}})
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        ids = send(api, keys, [f"u{i}" for i in range(20)], category="system")
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    assert statements and preference_reads(statements) == []
    with rt.sessions() as s:
        shown = s.scalars(select(Notification.in_inbox).where(Notification.id.in_(ids))).all()
    assert shown == [True] * 20
