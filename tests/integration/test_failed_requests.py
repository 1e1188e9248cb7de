"""Requests that cannot be stored: recorded once, shown to operators, never retried.

The worker-process proof of the batch split is tests/e2e/test_failed_requests.py; here the
tasks run in-process on the real broker (tests.broker.drain) and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DataError, OperationalError

from clarion.core import enqueue, schedule
from clarion.core.schemas import NotificationCreate
from clarion.db.models import FailedNotification, FailedRequest, Notification
from clarion.ids import utcnow
from clarion.workers.tasks import RETRY_TRANSIENT
from tests.broker import drain
from tests.conftest import make_key


@pytest.fixture
def admin(runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}


def _messages():
    good = enqueue.prepare(
        NotificationCreate(recipients=["ada", "bob"], category="c", title="ok"),
        producer="api-key:shop#3",
    )
    bad = enqueue.prepare(
        NotificationCreate(recipients=["cy"], category="c", title="ok"), producer="api-key:shop#3"
    )
    bad = bad.model_copy(update={"content": bad.content.model_copy(update={"title": "\0"})})
    return good, bad


def _count(runtime, model) -> int:
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_a_rerun_of_the_same_batch_records_the_bad_request_once(runtime):
    good, bad = _messages()
    create = runtime.celery.tasks["clarion.create"]
    raw = [good.model_dump(mode="json"), bad.model_dump(mode="json")]
    first = create.apply(args=raw, throw=True).get()
    again = create.apply(args=raw, throw=True).get()  # the ledger's re-publish, say
    assert (first["created"], first["failed"]) == (2, 1)
    assert (again["created"], again["skipped_existing"], again["failed"]) == (0, 2, 0)
    assert _count(runtime, FailedRequest) == 1
    assert _count(runtime, FailedNotification) == 1
    assert _count(runtime, Notification) == 2


def test_operators_list_and_inspect_failed_requests(runtime, client, admin, producer):
    good, bad = _messages()
    enqueue.enqueue(runtime.celery, good, bad)
    drain(runtime.celery)

    page = client.get("/v1/failed-requests", headers=admin).json()
    [item] = page["items"]
    assert item["request_id"] == str(bad.request_id)
    assert item["producer"] == "api-key:shop#3" and item["kind"] == "create"
    assert "content.title" in item["reason"] and page["next_cursor"] is None
    detail = client.get(f"/v1/failed-requests/{bad.request_id}", headers=admin).json()
    assert '"title":"\\u0000"' in detail["request"]  # the copy, with the NUL escaped
    assert client.get(f"/v1/failed-requests/{good.request_id}", headers=admin).status_code == 404
    mine = client.get("/v1/failed-requests?producer=api-key:other%231", headers=admin).json()
    assert mine["items"] == []
    # A notify key may see a request's fate, not the operators' listing.
    assert client.get("/v1/failed-requests", headers=producer).status_code == 403
    assert client.get(f"/v1/requests/{bad.request_id}", headers=producer).json()["status"] == (
        "failed"
    )


@pytest.mark.parametrize(("error", "calls"), [(DataError, 1), (OperationalError, 4)])
def test_a_data_error_is_not_retried_but_a_lost_connection_is(runtime, error, calls):
    ran = []

    @runtime.celery.task(name=f"test.raises.{error.__name__}", shared=False, **RETRY_TRANSIENT)
    def raises():
        ran.append(1)
        raise error("INSERT …", {}, Exception("refused"))

    raises.max_retries = 3
    result = raises.apply(throw=False)  # an eager retry runs again at once, in apply()
    assert result.failed() and isinstance(result.result, error)
    assert len(ran) == calls


def test_a_scheduled_request_stored_before_a_stricter_rule_fails_alone_at_release(
    runtime, client, producer
):
    # Two sends scheduled for the same minute; one was accepted before link schemes were
    # checked, so its stored message no longer validates. The release takes both at once.
    send_at = utcnow() + timedelta(minutes=5)
    for title in ("fine", "old"):
        body = {
            "recipients": ["ada"],
            "category": "c",
            "title": title,
            "send_at": send_at.isoformat(),
        }
        assert client.post("/v1/notifications", json=body, headers=producer).status_code == 202
    drain(runtime.celery)
    with runtime.engine.begin() as conn:
        old = conn.execute(
            text(
                "UPDATE scheduled_notifications SET message = jsonb_set(message,"
                " '{content,url}', '\"javascript:alert(1)\"') WHERE message->'content'->>'title'"
                " = 'old' RETURNING id, request_id"
            )
        ).one()

    released = schedule.release(**runtime.pipeline.kwargs(), now=send_at + timedelta(seconds=1))
    assert released == 1  # persist_due counts the messages it stored
    with runtime.sessions() as s:
        assert s.scalars(select(Notification.title)).all() == ["fine"]
    status = client.get(f"/v1/notifications/{old.id}", headers=producer).json()
    assert status["state"] == "failed" and "content.url" in status["reason"]
    progress = client.get(f"/v1/requests/{old.request_id}", headers=producer).json()
    assert progress["status"] == "failed"
