"""The embedded mode runs the retention task too (its beat): the same passes on SQLite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError

from clarion.core import retention
from clarion.core.idempotency import MemoryIdempotencyStore
from clarion.db.migrate import upgrade
from clarion.db.models import Delivery, InboxEvent, Notification, Subscriber
from clarion.db.session import transaction
from clarion.ids import derived_id, utcnow
from clarion.runtime import Runtime
from clarion.settings import Settings


def test_old_rows_go_on_sqlite_and_the_rest_stays(tmp_path):
    settings = Settings.embedded(tmp_path, retention_category_days={"security": 730})
    upgrade(settings.database_url)
    runtime = Runtime(settings)
    now = utcnow()

    def notification(session, seq: int, days: int, category: str = "news", deleted=None):
        at = now - timedelta(days=days)
        nid = derived_id(uuid.uuid4(), "x", at)
        session.add(
            Notification(
                id=nid, request_id=nid, recipient_id="ada", seq=seq, category=category,
                severity="low", title="t", meta={}, created_at=at, deleted_at=deleted,
            )
        )  # fmt: skip
        return nid

    try:
        with transaction(runtime.sessions) as s:
            s.add(Subscriber(id="ada", data={}, created_at=now, updated_at=now))
            s.flush()
            old = notification(s, 1, 200)
            fresh = notification(s, 2, 1)
            security = notification(s, 3, 200, "security")
            pending = notification(s, 4, 200)
            gone_long_ago = notification(s, 5, 60, deleted=now - timedelta(days=40))
            s.flush()
            s.add(
                Delivery(
                    id=uuid.uuid4(), notification_id=pending, channel="email", status="pending",
                    attempts=0, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            for seq, days in ((6, 100), (7, 1)):
                at = now - timedelta(days=days)
                s.add(InboxEvent(recipient_id="ada", seq=seq, type="read", data={}, created_at=at))

        report = retention.run(sessions=runtime.sessions, settings=settings)
        assert report.done
        with runtime.sessions() as s:
            left = set(
                s.scalars(Notification.__table__.select().with_only_columns(Notification.id))
            )
            assert left == {fresh, security, pending}
            assert old not in left and gone_long_ago not in left
            assert list(
                s.scalars(InboxEvent.__table__.select().with_only_columns(InboxEvent.seq))
            ) == [7]
        assert not any(retention.run(sessions=runtime.sessions, settings=settings).deleted.values())
    finally:
        runtime.close()


def test_retention_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLARION_SECRET_KEY", "e" * 40)
    monkeypatch.setenv("CLARION_RETENTION_DAYS", "90")
    monkeypatch.setenv("CLARION_RETENTION_CATEGORY_DAYS", '{"security": 730}')
    monkeypatch.setenv("CLARION_RETENTION_RECORD_DAYS", '{"events": 7}')
    settings = Settings()
    assert settings.retention_days == 90
    assert settings.retention_category_days == {"security": 730}
    assert settings.record_days("events") == 7 and settings.record_days("rule_runs") == 30
    monkeypatch.setenv("CLARION_RETENTION_RECORD_DAYS", '{"evnets": 7}')
    with pytest.raises(ValidationError, match="unknown record kinds"):
        Settings()
    monkeypatch.setenv("CLARION_RETENTION_RECORD_DAYS", "{}")
    monkeypatch.setenv("CLARION_RETENTION_CATEGORY_DAYS", '{"security": -1}')
    with pytest.raises(ValidationError, match="retention periods"):
        Settings()


def test_the_in_memory_idempotency_store_forgets_expired_keys():
    store = MemoryIdempotencyStore("memory://", ttl=0)
    for i in range(store.PRUNE_EVERY * 3):
        store.claim(f"k{i}", "body")
    assert len(store._items) < store.PRUNE_EVERY
