"""Scheduling, collapse and expiry on the embedded profile (SQLite, memory pub/sub): the
same core functions as on PostgreSQL, on SQLite's dialect (no SKIP LOCKED, row values)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clarion.core import enqueue, schedule
from clarion.core.create import create_notifications
from clarion.core.schemas import NotificationCreate
from clarion.db import recipient_inbox
from clarion.db.migrate import upgrade
from clarion.db.recipient_inbox import InboxFilter
from clarion.ids import utcnow
from clarion.runtime import Runtime
from clarion.settings import Settings


@pytest.fixture
def runtime(tmp_path):
    settings = Settings.embedded(tmp_path)
    upgrade(settings.database_url)
    rt = Runtime(settings)
    yield rt
    rt.close()


def create(runtime, **fields):
    values = {"recipients": ["a"], "category": "x", "title": "t", **fields}
    msg = enqueue.prepare(NotificationCreate(**values))
    create_notifications([msg], **runtime.pipeline.kwargs())
    return msg.items[0][0]


def listed(runtime, now=None) -> list:
    with runtime.sessions() as s:
        rows = recipient_inbox.page(
            session=s, recipient_id="a", limit=10, before=None, filters=InboxFilter(), now=now
        )
        return [r.id for r in rows]


def test_schedule_collapse_and_expiry_work_on_sqlite(runtime):
    send_at = utcnow() + timedelta(minutes=5)
    scheduled = create(runtime, title="later", send_at=send_at)
    first = create(runtime, collapse_key="k", expires_at=utcnow() + timedelta(hours=1))
    assert listed(runtime) == [first]

    second = create(runtime, collapse_key="k")
    assert listed(runtime) == [second]
    assert listed(runtime, now=utcnow() + timedelta(hours=2)) == [second]

    released = schedule.release(
        **runtime.pipeline.kwargs(),
        now=send_at,
    )
    assert released == 1 and listed(runtime) == [scheduled, second]

    lasting = create(runtime, expires_at=utcnow() + timedelta(hours=1))
    assert listed(runtime)[0] == lasting
    assert lasting not in listed(runtime, now=utcnow() + timedelta(hours=1, seconds=1))
