"""``/v1/schedules``: what a producer sees, and what it is refused."""

from __future__ import annotations

from datetime import datetime

PROBLEM = "application/problem+json"
BODY = {
    "recipients": ["ada"],
    "category": "reminders",
    "title": "Weekly review",
    "recurrence": {
        "rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=8;BYMINUTE=30;COUNT=3",
        "dtstart": "2030-06-03T00:00:00",
        "timezone": "Europe/Berlin",
    },
}


def test_create_shows_the_next_occurrences_on_the_schedules_clock(client, producer):
    made = client.post("/v1/schedules", json=BODY, headers=producer)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["status"] == "active" and body["rrule"] == BODY["recurrence"]["rrule"]
    assert [o["local"] for o in body["next_occurrences"]] == [
        "2030-06-03T08:30:00",
        "2030-06-10T08:30:00",
        "2030-06-17T08:30:00",
    ]
    assert body["next_occurrences"][0]["at"] == "2030-06-03T06:30:00Z"
    fetched = client.get(f"/v1/schedules/{body['id']}", headers=producer).json()
    assert fetched["content"]["title"] == "Weekly review"
    listed = client.get("/v1/schedules?status=active", headers=producer).json()
    assert [s["id"] for s in listed["items"]] == [body["id"]]
    assert client.get("/v1/schedules?status=paused", headers=producer).json()["items"] == []


def test_shorthand_and_per_subscriber_clock(client, producer):
    body = {**BODY, "recurrence": {"every": "weekdays at 09:00"}}
    made = client.post("/v1/schedules", json=body, headers=producer).json()
    assert made["recurrence"]["timezone"] == "subscriber"
    assert made["rrule"] == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=9;BYMINUTE=0;BYSECOND=0"
    assert all(
        o["at"] is None and o["local"].endswith("T09:00:00") for o in made["next_occurrences"]
    )
    assert all(datetime.fromisoformat(o["local"]).weekday() < 5 for o in made["next_occurrences"])


def test_bad_rules_and_one_off_fields_are_refused_with_the_field_named(client, producer):
    cases = {
        ("body", "recurrence"): {"rrule": "FREQ=SECONDLY"},
        ("body", "recurrence", "timezone"): {"every": "hourly", "timezone": "Mars/Olympus"},
    }
    for loc, recurrence in cases.items():
        answer = client.post(
            "/v1/schedules", json={**BODY, "recurrence": recurrence}, headers=producer
        )
        assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
        assert tuple(answer.json()["errors"][0]["loc"]) == loc, answer.json()
    for field in ("send_at", "dedupe_key"):
        value = "2030-01-01T00:00:00Z" if field == "send_at" else "x"
        answer = client.post("/v1/schedules", json={**BODY, field: value}, headers=producer)
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["loc"] == ["body", field]
    unknown = client.post(
        "/v1/schedules", json={**BODY, "recurrence": {"every": "fortnightly"}}, headers=producer
    )
    assert "not a shorthand" in unknown.json()["errors"][0]["msg"]


def test_patch_pause_resume_delete_and_unknown_ids(client, producer):
    made = client.post("/v1/schedules", json=BODY, headers=producer).json()
    path = f"/v1/schedules/{made['id']}"
    changed = client.patch(
        path,
        json={
            "title": "Monthly review",
            "recurrence": {"every": "monthly on day 1 at 08:00", "timezone": "UTC"},
        },
        headers=producer,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["content"]["title"] == "Monthly review"
    assert changed.json()["rrule"].startswith("FREQ=MONTHLY;BYMONTHDAY=1")
    bad = client.patch(path, json={"topic": "news", "recipients": ["x"]}, headers=producer)
    assert bad.status_code == 422  # both at once: checked as a whole
    to_topic = client.patch(path, json={"topic": "news"}, headers=producer).json()
    assert to_topic["topic"] == "news" and to_topic["recipients"] is None
    assert client.post(f"{path}/pause", headers=producer).json()["status"] == "paused"
    assert client.post(f"{path}/resume", headers=producer).json()["status"] == "active"
    assert client.delete(path, headers=producer).status_code == 204
    for method, url in (("get", path), ("delete", path), ("post", f"{path}/pause")):
        answer = getattr(client, method)(url, headers=producer)
        assert answer.status_code == 404 and answer.headers["content-type"] == PROBLEM


def test_idempotency_key_creates_one_schedule(client, producer):
    headers = {**producer, "Idempotency-Key": "weekly-review"}
    first = client.post("/v1/schedules", json=BODY, headers=headers)
    again = client.post("/v1/schedules", json=BODY, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/v1/schedules", headers=producer).json()["items"]) == 1
    other = client.post("/v1/schedules", json={**BODY, "title": "x"}, headers=headers)
    assert other.status_code == 409


def test_schedules_need_a_producer_key(client, user):
    assert client.post("/v1/schedules", json=BODY).status_code == 401
    assert client.get("/v1/schedules", headers=user("ada")).status_code == 401
