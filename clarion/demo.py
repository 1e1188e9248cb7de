"""``clarion dev --demo``: seed data so that a newcomer sees the built-in rules fire.

It writes a small links/campaigns database (SQLite, in the data directory) for the
lifecycle pack, five weeks of visits and conversions into Clarion's own ``events`` table
for the insight pack, and sends the activity events; the rules are configured to run every
few seconds on the embedded beat, notifying the dev user. A recurring schedule reminds the
dev user every minute (each reminder replaces the last, by its collapse key). Everything
is relative to the moment it runs, so every rule has something to find within its first run.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, text

from clarion.db.dialect import is_postgres
from clarion.db.models import Event
from clarion.db.session import transaction
from clarion.ids import new_id

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
EVERY = 10  # seconds between demo runs of each scan rule


def rules_config(data_dir: Path, user: str) -> dict[str, dict[str, Any]]:
    """CLARION_RULES for the demo: every pack on, notifying ``user``, fast."""
    return {
        "lifecycle": {
            "source_url": f"sqlite:///{data_dir / 'demo-source.db'}",
            "every_seconds": EVERY,
        },
        "insight": {"every_seconds": EVERY},
        "system": {"operators": [user], "every_seconds": EVERY, "load_per_core_threshold": 0.0001},
        "activities": {},
    }


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def seed_source(path: Path, user: str, now: datetime) -> None:
    """Links and campaigns in every state the lifecycle rules look for."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE links (id INTEGER PRIMARY KEY, owner TEXT, url TEXT,"
            " expires_at TIMESTAMP, is_active BOOLEAN, campaign_id INTEGER)"
        )
        db.execute(
            "CREATE TABLE campaigns (id INTEGER PRIMARY KEY, owner TEXT, name TEXT,"
            " starts_at TIMESTAMP, ends_at TIMESTAMP, is_active BOOLEAN)"
        )
        campaigns = [
            (1, user, "Black Friday", now - 10 * DAY, now + 2 * DAY),  # ends soon
            (2, user, "Autumn sale", now - 30 * DAY, now - DAY),  # ended
            (3, user, "Evergreen", now - 60 * DAY, now + 30 * DAY),  # running
        ]
        db.executemany(
            "INSERT INTO campaigns VALUES (?, ?, ?, ?, ?, 1)",
            [(i, o, n, _stamp(s), _stamp(e)) for i, o, n, s, e in campaigns],
        )
        links = [
            (1, "https://go.example/soon", now + 20 * HOUR, 1),  # expires soon
            (2, "https://go.example/gone", now - HOUR, 3),  # expired, campaign running
            (3, "https://go.example/live", now + 60 * DAY, 2),  # live, campaign ended
        ]
        db.executemany(
            "INSERT INTO links VALUES (?, ?, ?, ?, 1, ?)",
            [(i, user, url, _stamp(t), c) for i, url, t, c in links],
        )


def _visits(subject: str, user: str, start: datetime, hours: int, rng, **dims) -> list[dict]:
    rows = []
    for h in range(hours):
        at = start + h * HOUR
        per_hour = dims.get("per_hour", 40)
        for _ in range(per_hour):
            country = dims.get("country") or rng.choice(["FR", "DE", "FR", "ES"])
            device = dims.get("device") or rng.choice(["desktop", "desktop", "mobile"])
            kind = "conversion" if rng.random() < dims.get("conversion", 0.1) else "visit"
            rows.append(
                {
                    "id": new_id(),
                    "type": kind if kind == "conversion" else "visit",
                    "subject": subject,
                    "actor": None,
                    "data": {"country": country, "device": device, "owner": user},
                    "occurred_at": at + timedelta(minutes=rng.random() * 59),
                    "received_at": at,
                }
            )
    return rows


def seed_events(sessions, user: str, now: datetime) -> int:
    """Five weeks of steady traffic, then a last hour and day that stand out."""
    rng = random.Random(7)  # noqa: S311 - demo traffic, not cryptography
    hour_end = now.replace(minute=0, second=0, microsecond=0)
    day_end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    history_start = day_end - 35 * DAY
    rows = _visits("link-demo", user, history_start, 35 * 24 - 24, rng)
    # The last complete day: mostly mobile, few conversions (device shift, conversion drop).
    rows += _visits(
        "link-demo", user, day_end - DAY, 24, rng, device="mobile", conversion=0.01, per_hour=40
    )
    # Today until the last complete hour, as usual; then a spike from a new country.
    hours_today = int((hour_end - HOUR - day_end) / HOUR)
    rows += _visits("link-demo", user, day_end, max(hours_today, 0), rng)
    rows += _visits("link-demo", user, hour_end - HOUR, 1, rng, per_hour=400, country="JP")
    with transaction(sessions) as session:
        # A restart re-seeds relative to the new "now": the previous demo traffic goes.
        session.execute(delete(Event).where(Event.subject == "link-demo"))
        for start in range(0, len(rows), 5000):
            session.execute(insert(Event), rows[start : start + 5000])
        if is_postgres(session):
            # Fresh statistics: without them PostgreSQL plans the insight pack's
            # "subject IN (active subjects)" as a nested loop over the whole table.
            session.execute(text("ANALYZE events"))
    return len(rows)


ACTIVITY_EVENTS = (
    ("member.invited", {"invitee": "{user}", "workspace_name": "Acme", "role": "editor"}),
    ("user.signed_up", {"owners": ["{user}"], "email": "new@example.com", "name": "New Person"}),
    ("integration.connected", {"owners": ["{user}"], "name": "Slack"}),
    ("integration.failed", {"owners": ["{user}"], "name": "Slack", "error": "token revoked"}),
)


def activity_events(user: str, now: datetime) -> list[dict[str, Any]]:
    """The events the activities pack turns into notifications (sent through the queue)."""
    events = []
    for kind, data in ACTIVITY_EVENTS:
        filled = {
            k: ([x.format(user=user) for x in v] if isinstance(v, list) else v.format(user=user))
            for k, v in data.items()
        }
        events.append(
            {
                "id": str(new_id()),
                "type": kind,
                "subject": "integration-slack" if kind.startswith("integration") else "workspace-1",
                "actor": "demo-admin",
                "data": filled,
                "occurred_at": now.isoformat(),
            }
        )
    return events


DEMO_SCHEDULE = "demo: a reminder every minute"


def recurring_schedule(user: str):
    """The demo's recurring schedule (``POST /v1/schedules`` with this body)."""
    from clarion.api.schedule_schemas import ScheduleCreate

    return ScheduleCreate.model_validate(
        {
            "name": DEMO_SCHEDULE,
            "recipients": [user],
            "category": "reminders",
            "type": "demo_recurring",
            "title": "A recurring reminder",
            "body": "Sent every minute by a recurring schedule (GET /v1/schedules shows it); "
            "each one replaces the last.",
            "collapse_key": "demo-recurring",
            "recurrence": {"every": "every minute", "timezone": "UTC"},
        }
    )


def seed_schedule(runtime, user: str) -> None:
    """Replace the demo's recurring schedule (a restart makes it anew, not twice)."""
    from clarion.api import schedules
    from clarion.core.auth import Principal
    from clarion.db.models import Schedule

    with transaction(runtime.sessions) as session:
        session.execute(delete(Schedule).where(Schedule.name == DEMO_SCHEDULE))
    demo = Principal(key_id=0, name="demo", scopes=frozenset({"notify"}))
    schedules.create(runtime, demo, recurring_schedule(user), None)


def seed(data_dir: Path, sessions, user: str, now: datetime | None = None) -> list[dict]:
    """Write the demo source and events; returns the activity events to send."""
    now = now or datetime.now(UTC)
    seed_source(data_dir / "demo-source.db", user, now)
    seed_events(sessions, user, now)
    return activity_events(user, now)
