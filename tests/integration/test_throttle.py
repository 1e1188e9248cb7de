"""The per recipient throttle: at most N notifications per recipient per category per
window, decided by the real routing in the create task, recorded on the deliveries and
shown by ``GET /v1/notifications/{id}``; the excess dropped, or held for a digest."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.core import digests
from tests.broker import drain
from tests.channels.smtp import give_email

INBOX = "/v1/me/notifications"


@pytest.fixture
def throttled(make_runtime, smtp_server):
    """throttled(**settings) -> (runtime, client) with promo throttled to 2 an hour."""
    opened = []

    def make(**overrides):
        rt = make_runtime(
            **smtp_server.settings(), category_throttle={"promo": "2/hour"}, **overrides
        )
        opened.append(TestClient(create_app(runtime=rt)))
        return rt, opened[-1].__enter__()

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def send(rt, client, producer, category="promo", **fields) -> str:
    body = {"recipients": ["ada"], "category": category, "title": "Sale!", **fields}
    body = {"channels": ["in_app", "email"], **body}
    answer = client.post("/v1/notifications", json=body, headers=producer)
    assert answer.status_code == 202, answer.text
    drain(rt.celery)
    return answer.json()["notifications"][0]["id"]


def routed(client, producer, nid) -> dict[str, tuple[str, str | None]]:
    status = client.get(f"/v1/notifications/{nid}", headers=producer).json()
    assert "deliveries" in status, status
    return {d["channel"]: (d["status"], d["last_error"]) for d in status["deliveries"]}


def test_the_excess_is_dropped_and_the_decision_is_on_its_deliveries(
    throttled, producer, user, smtp_server
):
    rt, client = throttled()
    give_email(rt, "ada")
    first, second, third = (send(rt, client, producer, title=f"Sale {i}") for i in range(3))
    other = send(rt, client, producer, category="billing")  # another category
    critical = send(rt, client, producer, severity="critical")  # never throttled

    reason = "throttled: over 2 per 3600 s in 'promo'"
    assert routed(client, producer, third) == {
        "in_app": ("skipped", reason),
        "email": ("skipped", reason),
    }
    for nid in (first, second, other, critical):
        assert routed(client, producer, nid)["email"] == ("sent", None)
    titles = [i["title"] for i in client.get(INBOX, headers=user("ada")).json()["items"]]
    assert "Sale 2" not in titles and {"Sale 0", "Sale 1"} <= set(titles)
    assert len(smtp_server.messages) == 4


def test_with_digest_the_excess_is_held_and_sent_as_one_digest(
    throttled, producer, user, smtp_server
):
    rt, client = throttled(throttle_excess="digest", throttle_digest="hourly")
    give_email(rt, "ada")
    ids = [send(rt, client, producer, title=f"Sale {i}") for i in range(4)]

    held = [routed(client, producer, nid)["email"] for nid in ids[2:]]
    assert held == [("held", "throttled; digest: hourly")] * 2
    assert len(client.get(INBOX, headers=user("ada")).json()["items"]) == 4  # inbox: all
    assert len(smtp_server.messages) == 2

    status = client.get(f"/v1/notifications/{ids[2]}", headers=producer).json()
    [email] = [d for d in status["deliveries"] if d["channel"] == "email"]
    due = datetime.fromisoformat(email["next_attempt_at"])
    assert digests.run(**rt.pipeline.kwargs(), now=due) == 1
    drain(rt.celery)
    [digest] = smtp_server.messages[2:]
    text = digest.message.get_body(("plain",)).get_content()
    assert "Sale 2" in text and "Sale 3" in text and "Sale 0" not in text
