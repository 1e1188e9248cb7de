"""Topics and topic fan-out: the API, the fan-out task and progress, on the real broker."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from clarion.core import enqueue, fanout, queues
from clarion.core.schemas import CreateMessage, FanoutMessage, NotificationCreate
from clarion.db.models import Notification, Subscriber
from clarion.ids import derived_id
from tests.broker import drain, queued

SEND = "/v1/notifications"


def topic_url(key: str) -> str:
    return f"/v1/topics/{key}/subscribers"


def subscribe(client, producer, key: str, add=(), remove=()):
    return client.put(
        topic_url(key), json={"add": list(add), "remove": list(remove)}, headers=producer
    )


def stored(runtime, request_id) -> list[Notification]:
    with runtime.sessions() as s:
        query = select(Notification).where(Notification.request_id == uuid.UUID(str(request_id)))
        return list(s.scalars(query))


# -- topics ---------------------------------------------------------------------------------


def test_put_creates_the_topic_and_unknown_subscribers_and_says_what_changed(
    client, runtime, producer
):
    first = subscribe(client, producer, "releases", add=["ada", "bob", "cy"])
    assert first.status_code == 200
    assert first.json() == {"topic": "releases", "added": 3, "removed": 0, "total": 3}
    with runtime.sessions() as s:
        assert set(s.scalars(select(Subscriber.id))) == {"ada", "bob", "cy"}

    again = subscribe(client, producer, "releases", add=["ada", "dan"], remove=["cy", "zed"])
    assert again.json() == {"topic": "releases", "added": 1, "removed": 1, "total": 3}

    listed = client.get(topic_url("releases"), headers=producer).json()
    assert listed["total"] == 3 and listed["next_cursor"] is None
    assert [m["id"] for m in listed["items"]] == ["ada", "bob", "dan"]


def test_the_list_pages_by_cursor_in_id_order(client, producer):
    ids = [f"user-{i:03d}" for i in range(25)]
    subscribe(client, producer, "news", add=reversed(ids))
    seen, cursor = [], None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get(topic_url("news"), params=params, headers=producer).json()
        assert page["total"] == 25
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_topic_errors_are_problems(client, runtime, producer, user):
    assert client.get(topic_url("nobody"), headers=producer).status_code == 404
    too_many = subscribe(client, producer, "big", add=[f"u{i}" for i in range(10_001)])
    assert too_many.status_code == 422
    assert subscribe(client, producer, "t", add=["a"], remove=["a"]).status_code == 422
    assert subscribe(client, producer, "-bad key", add=["a"]).status_code == 422
    assert client.put(topic_url("t"), json={"add": ["a"]}).status_code == 401
    assert client.put(topic_url("t"), json={"add": ["a"]}, headers=user("a")).status_code == 401
    with runtime.sessions() as s:  # nothing refused left a trace
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_ten_thousand_ids_in_one_put(client, producer):
    ids = [f"member-{i}" for i in range(10_000)]
    done = subscribe(client, producer, "everyone", add=ids)
    assert done.json()["added"] == 10_000
    assert subscribe(client, producer, "everyone", remove=ids[:4000]).json() == {
        "topic": "everyone",
        "added": 0,
        "removed": 4000,
        "total": 6000,
    }


# -- fan-out --------------------------------------------------------------------------------


def test_a_send_to_a_topic_answers_at_once_and_fans_out_on_the_bulk_lane(client, runtime, producer):
    subscribe(client, producer, "releases", add=["ada", "bob", "cy"])
    sent = client.post(
        SEND, json={"topic": "releases", "category": "news", "title": "v2"}, headers=producer
    )
    assert sent.status_code == 202
    answer = sent.json()
    request_id = answer["request_id"]
    assert answer["notifications"] == [] and answer["topic"] == "releases"
    assert answer["progress"] == f"/v1/requests/{request_id}"
    assert queued(runtime.celery, queues.create_queue("bulk")) == 1
    assert queued(runtime.celery, queues.CREATE) == 0
    assert client.get(answer["progress"], headers=producer).status_code == 404  # not started

    drain(runtime.celery)

    rows = stored(runtime, request_id)
    assert sorted(r.recipient_id for r in rows) == ["ada", "bob", "cy"]
    accepted_at = rows[0].created_at
    for r in rows:
        assert r.id == derived_id(uuid.UUID(request_id), r.recipient_id, accepted_at)
    progress = client.get(answer["progress"], headers=producer).json()
    assert progress == {
        "request_id": request_id,
        "topic": "releases",
        "status": "enqueued",
        "total": 3,
        "batches": 1,
        "created": 3,
        "done": True,
        "reason": None,
    }


def test_an_ordinary_request_reports_its_count(client, runtime, producer):
    answer = client.post(
        SEND, json={"recipients": ["a", "b"], "category": "x", "title": "t"}, headers=producer
    ).json()
    drain(runtime.celery)
    progress = client.get(answer["progress"], headers=producer).json()
    assert (progress["topic"], progress["created"], progress["done"]) == (None, 2, True)


def test_a_fan_out_walks_in_batches_and_takes_the_audience_as_of_the_send(
    client, make_runtime, producer
):
    rt = make_runtime(fanout_batch=4)
    subscribe(client, producer, "t", add=[f"s{i:02d}" for i in range(10)])
    message = enqueue.prepare(NotificationCreate(topic="t", category="news", title="hi"))
    subscribe(client, producer, "t", add=["late"])  # after the send was accepted
    enqueue.enqueue(rt.celery, message)

    drain(rt.celery, names=(queues.create_queue("bulk"),), limit=1)  # the fan-out task only
    assert queued(rt.celery, queues.create_queue("bulk")) == 3  # pages of 4, 4 and 2
    drain(rt.celery)

    rows = stored(rt, message.request_id)
    assert sorted(r.recipient_id for r in rows) == [f"s{i:02d}" for i in range(10)]


@pytest.mark.parametrize("members", [16, 19])  # reads of 8: the last one empty, or short
def test_a_walk_that_reads_several_pages_at_once_publishes_each_page_once(
    client, make_runtime, producer, monkeypatch, members
):
    monkeypatch.setattr(fanout, "READ_IDS", 8)  # two pages of 4 per read
    rt = make_runtime(fanout_batch=4)
    audience = [f"s{i:02d}" for i in range(members)]
    subscribe(client, producer, "t", add=audience)
    message = enqueue.prepare(NotificationCreate(topic="t", category="news", title="hi"))
    subscribe(client, producer, "t", add=["late"])  # after the send was accepted
    enqueue.enqueue(rt.celery, message)

    drain(rt.celery, names=(queues.create_queue("bulk"),), limit=1)  # the fan-out task only
    assert queued(rt.celery, queues.create_queue("bulk")) == -(-members // 4)
    drain(rt.celery)

    rows = stored(rt, message.request_id)
    assert sorted(r.recipient_id for r in rows) == audience
    progress = client.get(f"/v1/requests/{message.request_id}", headers=producer).json()
    assert (progress["total"], progress["created"], progress["done"]) == (members, members, True)


def test_a_fan_out_interrupted_mid_walk_and_run_again_creates_nothing_twice(
    client, make_runtime, producer
):
    rt = make_runtime(fanout_batch=100)
    members = [f"m{i:04d}" for i in range(1000)]
    subscribe(client, producer, "all", add=members)
    message = enqueue.prepare(NotificationCreate(topic="all", category="news", title="hi"))
    assert isinstance(message, FanoutMessage)

    class BrokerGoneAfter:
        def __init__(self, pages: int) -> None:
            self.pages = pages

        def __call__(self, batch) -> None:
            if self.pages == 0:
                raise ConnectionError("broker unreachable")
            self.pages -= 1
            enqueue.enqueue(rt.celery, batch)

    with pytest.raises(ConnectionError):
        fanout.fan_out(
            message, sessions=rt.sessions, settings=rt.settings, publish=BrokerGoneAfter(3)
        )
    drain(rt.celery)  # the three pages that made it are created
    assert len(stored(rt, message.request_id)) == 300
    progress = client.get(f"/v1/requests/{message.request_id}", headers=producer).json()
    assert (progress["status"], progress["created"], progress["done"]) == (
        "fanning_out",
        300,
        False,
    )

    enqueue.enqueue(rt.celery, message)  # the task again, as the broker redelivers it
    drain(rt.celery)

    rows = stored(rt, message.request_id)
    assert sorted(r.recipient_id for r in rows) == members  # each exactly once
    with rt.sessions() as s:  # no sequence bumped twice either
        assert set(s.scalars(select(Subscriber.seq).where(Subscriber.id.in_(members)))) == {1}
    progress = client.get(f"/v1/requests/{message.request_id}", headers=producer).json()
    assert (progress["total"], progress["created"], progress["done"]) == (1000, 1000, True)

    enqueue.enqueue(rt.celery, message)  # once more, after it finished: publishes nothing
    assert drain(rt.celery) == 1


def test_a_page_redelivered_in_either_form_stores_nothing_twice(client, make_runtime, producer):
    rt = make_runtime(fanout_batch=3)
    members = ["ada", "bob", "cy", "dan", "eve"]
    subscribe(client, producer, "t", add=members)
    message = enqueue.prepare(NotificationCreate(topic="t", category="news", title="hi"))
    assert isinstance(message, FanoutMessage)
    enqueue.enqueue(rt.celery, message)
    drain(rt.celery)
    first = {r.recipient_id: (r.id, r.seq) for r in stored(rt, message.request_id)}
    assert sorted(first) == members

    page = fanout.batch_message(message, members[:3])  # as the walk sends it: no ids
    with_ids = CreateMessage(  # as a walk before the derived form sent it
        request_id=message.request_id,
        accepted_at=message.accepted_at,
        items=[(derived_id(message.request_id, r, message.accepted_at), r) for r in members[3:]],
        content=message.content,
        lane="bulk",
    )
    enqueue.enqueue(rt.celery, page, with_ids)
    assert drain(rt.celery) == 1  # one create task, both requests

    again = {r.recipient_id: (r.id, r.seq) for r in stored(rt, message.request_id)}
    assert again == first  # the same rows, no sequence bumped
    progress = client.get(f"/v1/requests/{message.request_id}", headers=producer).json()
    assert (progress["total"], progress["created"], progress["done"]) == (5, 5, True)


def test_a_create_message_with_ids_from_before_the_upgrade_is_stored(client, runtime, producer):
    subscribe(client, producer, "t", add=["ada", "bob"])
    message = enqueue.prepare(NotificationCreate(topic="t", category="news", title="hi"))
    assert isinstance(message, FanoutMessage)
    ids = {r: derived_id(message.request_id, r, message.accepted_at) for r in ("ada", "bob")}
    old_form = {
        "request_id": str(message.request_id),
        "accepted_at": message.accepted_at.isoformat(),
        "items": [[str(nid), r] for r, nid in ids.items()],
        "content": message.content.model_dump(mode="json"),
        "lane": "bulk",
        "producer": None,
    }
    runtime.celery.send_task(
        enqueue.CREATE_TASK, args=[old_form], queue=queues.create_queue("bulk")
    )
    drain(runtime.celery)
    assert {r.recipient_id: r.id for r in stored(runtime, message.request_id)} == ids


def test_idempotency_key_replays_a_topic_send(client, runtime, producer):
    subscribe(client, producer, "t", add=["a"])
    body = {"topic": "t", "category": "news", "title": "once"}
    headers = {**producer, "Idempotency-Key": "broadcast-1"}
    first = client.post(SEND, json=body, headers=headers)
    second = client.post(SEND, json=body, headers=headers)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json() == second.json()
    assert queued(runtime.celery, queues.create_queue("bulk")) == 1
    other = client.post(SEND, json={**body, "topic": "u"}, headers=headers)
    assert other.status_code == 409


def test_recipients_and_topic_together_are_refused(client, producer):
    both = {"recipients": ["a"], "topic": "t", "category": "x", "title": "t"}
    assert client.post(SEND, json=both, headers=producer).status_code == 422
    bad = {"topic": "no spaces", "category": "x", "title": "t"}
    assert client.post(SEND, json=bad, headers=producer).status_code == 422


def test_a_send_to_a_topic_nobody_follows_is_done_with_nobody(client, runtime, producer):
    answer = client.post(
        SEND, json={"topic": "empty", "category": "news", "title": "hello?"}, headers=producer
    ).json()
    drain(runtime.celery)
    progress = client.get(answer["progress"], headers=producer).json()
    assert (progress["total"], progress["batches"], progress["created"]) == (0, 0, 0)
    assert progress["status"] == "enqueued" and progress["done"] is True
