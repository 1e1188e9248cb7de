"""The notification centre's backend on PostgreSQL and Redis: get one, seen and unseen,
mark unread, delete read, snooze (and its release on beat), and the live events that keep
a user's other tabs in step (read from the Redis channel every API process listens to)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import update

from clarion.core import replay, snooze
from clarion.core.pubsub import decode
from clarion.db.models import Notification
from tests.broker import drain
from tests.threads import run_concurrently

INBOX = "/v1/me/notifications"


class Live:
    """What the API and workers publish for one user, as each API process receives it."""

    def __init__(self, runtime) -> None:
        self.pubsub = redis.Redis.from_url(runtime.settings.redis_url).pubsub()
        self.pubsub.subscribe(runtime.pubsub.channel)
        self.pubsub.get_message(timeout=1)  # the subscribe confirmation

    def events(self, recipient: str | None, wait: float = 0.5) -> list[dict]:
        """Everything published for ``recipient`` (None: anyone) since the last call, after
        ``wait`` seconds of listening."""
        got, deadline = [], time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message and message["type"] == "message":
                got += [e for e in decode(message["data"]) if recipient in (None, e["recipient"])]
        return got


@pytest.fixture
def live(runtime):
    listener = Live(runtime)
    yield listener
    listener.pubsub.close()


@pytest.fixture
def send(client, runtime, producer):
    """send(recipient, **fields) -> notification id, persisted by running the create task."""

    def _send(recipient: str = "alice", **fields) -> str:
        payload = {"recipients": [recipient], "category": "links", "title": "t", **fields}
        answer = client.post("/v1/notifications", json=payload, headers=producer)
        assert answer.status_code == 202, answer.text
        drain(runtime.celery)
        return answer.json()["notifications"][0]["id"]

    return _send


def counts(client, user, who: str = "alice") -> dict:
    return client.get(f"{INBOX}/unread-count", headers=user(who)).json()


def listed(client, user, who: str = "alice", **params) -> list[str]:
    page = client.get(INBOX, params=params, headers=user(who))
    assert page.status_code == 200, page.text
    return [item["id"] for item in page.json()["items"]]


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


# -- one item -------------------------------------------------------------------------------
def test_get_one_is_the_item_and_another_users_or_an_unknown_id_is_404(client, send, user):
    nid = send(title="Hello", url="/links/abc")

    mine = client.get(f"{INBOX}/{nid}", headers=user("alice"))
    theirs = client.get(f"{INBOX}/{nid}", headers=user("mallory"))
    unknown = client.get(f"{INBOX}/{uuid.uuid4()}", headers=user("alice"))

    assert mine.status_code == 200
    assert mine.json()["id"] == nid and mine.json()["title"] == "Hello"
    assert mine.json()["snoozed_until"] is None and mine.json()["actions"] == []
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    assert "Hello" not in theirs.text


# -- seen -----------------------------------------------------------------------------------
def test_seen_by_ids_lowers_unseen_but_not_unread_and_tells_other_tabs(client, send, user, live):
    first, second, _third = send(), send(), send()
    assert counts(client, user) == {"total": 3, "by_category": {"links": 3}, "unseen": 3}
    live.events("alice")  # what the sends published

    done = client.post(f"{INBOX}/seen", json={"ids": [first, second]}, headers=user("alice"))
    again = client.post(f"{INBOX}/seen", json={"ids": [first]}, headers=user("alice"))

    assert done.json() == {"updated": 2} and again.json() == {"updated": 0}
    assert counts(client, user) == {"total": 3, "by_category": {"links": 3}, "unseen": 1}
    updated, count = live.events("alice")  # nothing for the repeat
    assert updated["type"] == "notification.updated"
    assert sorted(updated["data"]["ids"]) == sorted([first, second])
    assert updated["data"]["seen_at"]
    assert count["type"] == "unread_count" and count["data"]["unseen"] == 1
    assert count["cursor"] == updated["cursor"] == 4  # three creations, then this
    assert listed(client, user, status="unseen") == [_third]


def test_seen_up_to_a_cursor_marks_everything_before_it(client, send, user, live):
    ids = [send() for _ in range(3)]
    seqs = [client.get(f"{INBOX}/{i}", headers=user("alice")).json()["seq"] for i in ids]
    send("bob")

    done = client.post(f"{INBOX}/seen", json={"up_to": seqs[1]}, headers=user("alice"))

    assert done.json() == {"updated": 2}
    assert listed(client, user, status="unseen") == [ids[2]]
    assert counts(client, user, "bob")["unseen"] == 1  # bob's are his own
    changed = [e for e in live.events("alice") if e["type"] == "notification.updated"]
    assert [e["data"]["up_to"] for e in changed] == [seqs[1]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": [], "up_to": 1},
        {"ids": ["x"]},
        {"up_to": -1},
        {"ids": [str(uuid.uuid4())] * 101},
    ],
    ids=["neither", "both", "bad-id", "negative", "too-many"],
)
def test_seen_wants_exactly_one_of_ids_and_up_to(client, user, body):
    response = client.post(f"{INBOX}/seen", json=body, headers=user("alice"))
    assert response.status_code == 422
    assert response.json()["type"] == "urn:clarion:problem:validation-error"


def test_reading_is_seeing_and_marking_unread_keeps_it_seen(client, send, user, live):
    nid = send()
    client.patch(f"{INBOX}/{nid}", json={"read": True}, headers=user("alice"))
    live.events("alice")

    unread = client.patch(f"{INBOX}/{nid}", json={"read": False}, headers=user("alice"))

    assert unread.json()["read_at"] is None and unread.json()["seen_at"] is not None
    assert counts(client, user) == {"total": 1, "by_category": {"links": 1}, "unseen": 0}
    updated, count = live.events("alice")
    assert updated["data"]["ids"] == [nid] and updated["data"]["read_at"] is None
    assert count["data"] == {"total": 1, "by_category": {"links": 1}, "unseen": 0}


# -- delete read ----------------------------------------------------------------------------
def test_delete_read_deletes_the_read_ones_shown_and_keeps_the_rest(client, send, user, live):
    read_links, read_system = send(category="links"), send(category="system")
    unread = send(category="links")
    archived = send(category="links")
    for nid in (read_links, read_system, archived):
        client.patch(f"{INBOX}/{nid}", json={"read": True}, headers=user("alice"))
    client.patch(f"{INBOX}/{archived}", json={"archived": True}, headers=user("alice"))
    live.events("alice")

    links = client.post(f"{INBOX}/delete-read", json={"category": "links"}, headers=user("alice"))
    rest = client.post(f"{INBOX}/delete-read", headers=user("alice"))
    none = client.post(f"{INBOX}/delete-read", headers=user("mallory"))

    assert (links.json(), rest.json(), none.json()) == (
        {"updated": 1},
        {"updated": 1},
        {"updated": 0},
    )
    assert listed(client, user) == [unread]
    assert listed(client, user, archived=True) == [archived]
    deleted = [e["data"] for e in live.events("alice") if e["type"] == "notification.updated"]
    assert deleted == [
        {"all": True, "category": "links", "deleted": True},
        {"all": True, "category": None, "deleted": True},
    ]


# -- snooze ---------------------------------------------------------------------------------
def _later(minutes: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def test_a_snoozed_notification_is_hidden_from_lists_and_counts_until_listed_as_snoozed(
    client, send, user, live
):
    kept, snoozed = send(), send()
    live.events("alice")

    patched = client.patch(
        f"{INBOX}/{snoozed}", json={"snoozed_until": _later()}, headers=user("alice")
    )

    assert patched.status_code == 200 and patched.json()["snoozed_until"] is not None
    assert listed(client, user) == [kept]
    assert listed(client, user, status="unread") == [kept]
    assert listed(client, user, snoozed=True) == [snoozed]
    assert counts(client, user) == {"total": 1, "by_category": {"links": 1}, "unseen": 1}
    # read-all leaves it for when it comes back
    assert client.post(f"{INBOX}/read-all", headers=user("alice")).json() == {"updated": 1}
    updated, count = live.events("alice")[:2]
    assert updated["data"]["ids"] == [snoozed] and updated["data"]["snoozed_until"]
    assert count["data"]["total"] == 1
    assert client.get(f"{INBOX}/{snoozed}", headers=user("alice")).status_code == 200


def test_snoozing_into_the_past_is_422_and_null_brings_it_back_at_once(client, send, user, live):
    nid = send()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    refused = client.patch(f"{INBOX}/{nid}", json={"snoozed_until": past}, headers=user("alice"))
    client.patch(f"{INBOX}/{nid}", json={"snoozed_until": _later()}, headers=user("alice"))
    live.events("alice")
    back = client.patch(f"{INBOX}/{nid}", json={"snoozed_until": None}, headers=user("alice"))

    assert refused.status_code == 422
    assert back.status_code == 200 and back.json()["snoozed_until"] is None
    assert listed(client, user) == [nid]
    unsnoozed, count = live.events("alice")
    assert unsnoozed["type"] == "notification.unsnoozed" and unsnoozed["data"]["id"] == nid
    assert count["data"]["total"] == 1


def _end_snoozes(runtime, *ids: str) -> None:
    """Time passes: the snoozes of these notifications ended a second ago."""
    with runtime.engine.begin() as conn:
        conn.execute(
            update(Notification)
            .where(Notification.id.in_([uuid.UUID(i) for i in ids]))
            .values(snoozed_until=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_an_ended_snooze_comes_back_new_once_with_one_event_however_often_beat_runs(
    client, runtime, send, user, live
):
    nid, other = send(), send()
    client.patch(f"{INBOX}/{nid}", json={"read": True}, headers=user("alice"))
    for i in (nid, other):
        client.patch(f"{INBOX}/{i}", json={"snoozed_until": _later(60)}, headers=user("alice"))
    assert listed(client, user) == []
    _end_snoozes(runtime, nid)
    live.events("alice")

    release = runtime.celery.tasks["clarion.snooze.release"]
    first, second = release(), release()  # the beat task, run twice

    assert (first, second) == ({"released": 1}, {"released": 0})
    assert listed(client, user) == [nid]  # other is still snoozed
    item = client.get(f"{INBOX}/{nid}", headers=user("alice")).json()
    assert item["snoozed_until"] is None and item["read_at"] is None and item["seen_at"] is None
    events = live.events("alice")
    assert kinds(events) == ["notification.unsnoozed", "unread_count"]
    assert events[0]["data"]["id"] == nid and events[0]["data"]["read_at"] is None
    assert events[1]["data"] == {"total": 1, "by_category": {"links": 1}, "unseen": 1}
    # A tab that was away gets it on resume, in cursor order.
    with runtime.sessions() as s:
        replayed = replay.replay(session=s, recipient_id="alice", since=events[0]["cursor"] - 1,
                                 limit=10)  # fmt: skip
    assert [(e["type"], e["data"]["id"]) for e in replayed] == [("notification.unsnoozed", nid)]


def test_two_beats_releasing_at_once_bring_each_snooze_back_once(client, runtime, send, user, live):
    ids = [send(recipient) for recipient in ("alice", "bob", "carol") for _ in range(5)]
    for nid, who in zip(ids, ["alice"] * 5 + ["bob"] * 5 + ["carol"] * 5, strict=True):
        client.patch(f"{INBOX}/{nid}", json={"snoozed_until": _later()}, headers=user(who))
    _end_snoozes(runtime, *ids)
    live.events("alice")
    released: list[int] = []

    errors = run_concurrently(
        lambda _: released.append(
            snooze.release(sessions=runtime.sessions, publisher=runtime.pubsub)
        ),
        range(4),
    )

    assert errors == [] and sum(released) == 15
    published = live.events(None)
    for who in ("alice", "bob", "carol"):
        events = [
            e for e in published if e["recipient"] == who and e["type"] == "notification.unsnoozed"
        ]
        assert len(events) == 5 and len({e["data"]["id"] for e in events}) == 5
        cursors = [e["cursor"] for e in events]
        assert cursors == sorted(cursors) and len(set(cursors)) == 5
    assert sorted(listed(client, user, "bob")) == sorted(ids[5:10])


def test_the_beat_schedule_releases_snoozes_on_the_periodic_queue(settings):
    from clarion.core import queues
    from clarion.workers.app import beat_schedule

    entry = beat_schedule(settings)["release-snoozed"]
    assert entry["task"] == "clarion.snooze.release"
    assert entry["options"]["queue"] == queues.PERIODIC
