"""One request that cannot be stored never costs the other requests of its batch their
notifications, with a real worker process on PostgreSQL and Redis.

The API coalesces concurrent sends into one ``create`` task. Here the requests are
published as one such task directly, around the API's validation (which refuses them
now), the way a bug or an older producer could: the good ones must all be stored, and
each bad one recorded with its reason, promptly (not after ten retries).
"""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select, text

from clarion.core import enqueue, ledger, queues
from clarion.core.schemas import CreateMessage, FanoutMessage, NotificationCreate
from clarion.db.models import FailedRequest, Notification
from tests.conftest import make_key, process_env
from tests.e2e.procs import Proc, wait_for

pytestmark = pytest.mark.e2e
PRODUCER = "api-key:billing#7"
PROMPTLY = 20  # seconds; ten retries with backoff took minutes, then dropped the batch


@pytest.fixture
def worker(runtime, tmp_path):
    # INFO: Celery logs each retry ("Retry in 2s"), and a data error must have none.
    env = process_env(runtime.settings.database_url, CLARION_LOG_LEVEL="INFO")
    proc = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    # "Promptly" is timed from a worker that is consuming, not from a cold start.
    wait_for(lambda: " ready." in proc.output(), 60, "the worker to start", proc)
    yield proc
    proc.stop()


def _good(i: int) -> CreateMessage:
    body = NotificationCreate(recipients=[f"u{i}-a", f"u{i}-b"], category="c", title=f"ok {i}")
    return enqueue.prepare(body, producer=PRODUCER)


def _bad(i: int, **content) -> CreateMessage:
    """A request whose content skipped validation (model_copy does not validate)."""
    message = _good(i)
    return message.model_copy(update={"content": message.content.model_copy(update=content)})


def _stored_ids(runtime) -> set[uuid.UUID]:
    with runtime.sessions() as s:
        return set(s.scalars(select(Notification.id)))


def _failed(runtime) -> dict[uuid.UUID, FailedRequest]:
    with runtime.sessions() as s:
        return {f.request_id: f for f in s.scalars(select(FailedRequest))}


def _ids(*messages: CreateMessage) -> set[uuid.UUID]:
    return {nid for m in messages for nid, _ in m.items}


def _settled(runtime) -> bool:
    return ledger.for_app(runtime.celery).overdue(0, 100) == []


def test_unstorable_requests_in_a_batch_are_recorded_and_the_rest_stored(runtime, worker, client):
    good = [_good(i) for i in range(6)]
    nul = _bad(6, title="Invoice\u0000")
    surrogate = _bad(7, metadata={"note": "\ud800"})
    batch = [good[0], nul, *good[1:4], surrogate, *good[4:]]
    enqueue.enqueue(runtime.celery, *batch)  # one create task: the coalesced shape
    topic = enqueue.prepare(NotificationCreate(topic="news", category="c", title="t"))
    fanout = topic.model_copy(update={"content": topic.content.model_copy(update={"body": "\0"})})
    assert isinstance(fanout, FanoutMessage)
    enqueue.enqueue(runtime.celery, fanout)
    event_id = uuid.uuid4()
    runtime.celery.send_task(
        "clarion.events.ingest",
        args=[{"id": str(event_id), "type": "a.b", "data": {"x": "\0"}}],
        queue=queues.ENGINE,
    )

    started = time.monotonic()
    wait_for(lambda: len(_failed(runtime)) == 4, PROMPTLY, "four failed records", worker)
    wait_for(lambda: _stored_ids(runtime) == _ids(*good), PROMPTLY, "the good requests", worker)
    assert time.monotonic() - started < PROMPTLY
    failed = _failed(runtime)
    assert failed[nul.request_id].kind == "create"
    assert failed[nul.request_id].producer == PRODUCER
    assert "content.title" in failed[nul.request_id].reason
    assert "U+0000 (NUL)" in failed[nul.request_id].reason
    assert "U+D800" in failed[surrogate.request_id].reason
    assert "\\u0000" in failed[nul.request_id].request  # the copy keeps the NUL as an escape
    assert failed[fanout.request_id].kind == "fanout"
    assert failed[event_id].kind == "event"
    wait_for(lambda: _settled(runtime), 10, "the ledger entries settled", worker)
    assert "Retry in" not in worker.output()

    # The producer sees why, under the request and under each of its notification ids.
    headers = {"Authorization": f"Bearer {make_key(runtime, 'admin')}"}
    progress = client.get(f"/v1/requests/{nul.request_id}", headers=headers).json()
    assert progress["status"] == "failed" and progress["done"] is True
    assert "U+0000 (NUL)" in progress["reason"]
    nid = nul.items[0][0]
    status = client.get(f"/v1/notifications/{nid}", headers=headers).json()
    assert status["state"] == "failed" and status["request_id"] == str(nul.request_id)
    assert (
        client.get(f"/v1/requests/{good[0].request_id}", headers=headers).json()["status"]
        == "created"
    )
    listed = client.get("/v1/failed-requests?kind=create", headers=headers).json()["items"]
    assert {i["request_id"] for i in listed} == {str(nul.request_id), str(surrogate.request_id)}


@pytest.fixture
def refusing_database(runtime):
    """The database refuses two titles that pass validation: one by a data exception
    (SQLSTATE 22023, as for a value it cannot hold) and one by a CHECK constraint
    (an integrity error), so the worker meets the errors that validation cannot foresee."""
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION test_refuse_title() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.title = 'poison: data' THEN"
                " RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END IF;"
                " RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER test_refuse_title BEFORE INSERT ON notifications"
                " FOR EACH ROW EXECUTE FUNCTION test_refuse_title()"
            )
        )
        conn.execute(
            text(
                "ALTER TABLE notifications ADD CONSTRAINT test_refuse_title"
                " CHECK (title <> 'poison: check')"
            )
        )
    yield
    with runtime.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER test_refuse_title ON notifications"))
        conn.execute(text("DROP FUNCTION test_refuse_title()"))
        conn.execute(text("ALTER TABLE notifications DROP CONSTRAINT test_refuse_title"))


def test_a_batch_the_database_refuses_is_split_and_only_the_bad_requests_fail(
    runtime, refusing_database, worker
):
    good = [_good(i) for i in range(6)]
    data, check = _bad(6, title="poison: data"), _bad(7, title="poison: check")
    enqueue.enqueue(runtime.celery, good[0], data, *good[1:5], check, good[5])

    wait_for(lambda: len(_failed(runtime)) == 2, PROMPTLY, "two failed records", worker)
    wait_for(lambda: _stored_ids(runtime) == _ids(*good), PROMPTLY, "the good requests", worker)
    failed = _failed(runtime)
    assert "refused by the test" in failed[data.request_id].reason
    assert "CheckViolation" in failed[check.request_id].reason
    with runtime.sessions() as s:
        # Each good recipient got exactly one notification: the failed batch left nothing.
        per_recipient = s.execute(
            select(Notification.recipient_id, func.count()).group_by(Notification.recipient_id)
        ).all()
    assert sorted(per_recipient) == sorted((r, 1) for m in good for _, r in m.items)
    wait_for(lambda: _settled(runtime), 10, "the ledger entry settled", worker)
    assert "Retry in" not in worker.output()
