"""The chat and sms channels through Apprise's json:// notifier to a local receiver, the
addresses API (sealed at rest, masked back, validated), and their logs (no address)."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from clarion.api.app import create_app
from clarion.core import enqueue, queues
from clarion.core.schemas import NotificationCreate
from clarion.db import outcomes as outcome_rows
from clarion.db.models import DeadLetter, Delivery
from tests.broker import drain
from tests.channels import FAST_RETRY, outcomes
from tests.channels.apprise_peer import set_address

PROBLEM = "application/problem+json"


@pytest.fixture
def rt(make_runtime, chat_harness, sms_harness):
    return make_runtime(**FAST_RETRY)


@pytest.fixture
def api(rt):
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as c:
        yield c


def notify(rt, channel, recipients=("ada",), category="orders", **fields) -> list[Delivery]:
    values = {"title": "Order shipped", "body": "It leaves today.", **fields}
    msg = enqueue.prepare(
        NotificationCreate(
            recipients=list(recipients), category=category, channels=[channel], **values
        )
    )
    enqueue.enqueue(rt.celery, msg)
    drain(rt.celery, names=(queues.CREATE, queues.deliver_queue(channel)))
    ids = [nid for nid, _ in msg.items]
    with rt.sessions() as s:
        return list(s.scalars(select(Delivery).where(Delivery.notification_id.in_(ids))))


def test_a_subscribers_chat_url_is_sealed_masked_and_used(api, rt, producer, apprise_receiver):
    url = apprise_receiver.url(path="ada-secret-token")
    put = api.put("/v1/subscribers/ada/addresses/chat", json={"address": url}, headers=producer)
    assert put.status_code == 200, put.text
    assert put.json()["address"] == "json://…/****" and put.json()["active"]
    assert (
        "ada-secret-token"
        not in api.get("/v1/subscribers/ada/addresses/chat", headers=producer).text
    )
    with rt.sessions() as s:  # at rest: not in clear
        stored = s.execute(text("SELECT sealed, display FROM subscriber_addresses")).one()
    assert "ada-secret-token" not in stored.sealed + stored.display
    [row] = notify(rt, "chat")
    assert row.status == "sent" and row.provider_ref == "apprise:json"
    [got] = apprise_receiver.accepted()
    assert got["title"] == "Order shipped" and got["message"] == "It leaves today."
    assert apprise_receiver.paths == ["/ada-secret-token"]
    assert api.delete("/v1/subscribers/ada/addresses/chat", headers=producer).status_code == 204
    [row] = notify(rt, "chat")
    assert row.status == "skipped"


def test_a_signed_in_subscriber_sets_their_own_chat_url(api, user, apprise_receiver):
    put = api.put(
        "/v1/me/addresses/chat", json={"address": apprise_receiver.url()}, headers=user("bo")
    )
    assert put.status_code == 200
    assert api.get("/v1/me/addresses/chat", headers=user("bo")).json()["channel"] == "chat"
    assert api.get("/v1/me/addresses/chat", headers=user("cy")).status_code == 404


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("nonsense://whatever", "validation-error"),
        ("json://10.0.0.7/hook", "url-not-allowed"),  # private: SSRF policy
        ("ntfys://169.254.169.254/topic", "url-not-allowed"),  # cloud metadata
    ],
)
def test_a_chat_url_apprise_or_the_outbound_policy_refuses_is_422(api, producer, address, kind):
    got = api.put("/v1/subscribers/ada/addresses/chat", json={"address": address}, headers=producer)
    assert got.status_code == 422 and got.headers["content-type"] == PROBLEM
    assert got.json()["type"].endswith(kind)
    assert got.json()["errors"][0]["loc"] == ["body", "address"]
    assert address not in got.text or kind == "url-not-allowed"


def test_a_phone_number_is_normalised_to_e164_and_sent_with_its_segments(
    api, rt, producer, apprise_receiver
):
    put = api.put(
        "/v1/subscribers/ada/addresses/sms", json={"address": "+33 6 12 34 56 78"}, headers=producer
    )
    assert put.status_code == 200 and put.json()["address"] == "+********678"
    [row] = notify(rt, "sms", title="Order shipped", body="x" * 200)
    assert row.status == "sent"
    assert row.provider_ref == "apprise:json;GSM-7;segments=2"  # 214 septets: 153 + 61
    [got] = apprise_receiver.accepted()
    assert got["to"] == "+33612345678" and got["message"].startswith("Order shipped xxx")
    [row] = notify(rt, "sms", title="Заказ отправлен", body="")
    assert row.provider_ref == "apprise:json;UCS-2;segments=1"


@pytest.mark.parametrize("number", ["06 12 34 56 78", "+1 555", "call me"])
def test_a_phone_number_that_is_not_e164_is_422_naming_the_field(api, producer, number):
    got = api.put("/v1/subscribers/ada/addresses/sms", json={"address": number}, headers=producer)
    assert got.status_code == 422 and got.headers["content-type"] == PROBLEM
    assert got.json()["errors"][0]["loc"] == ["body", "address"]


def test_an_address_on_a_channel_without_addresses_is_422(api, producer):
    got = api.put("/v1/subscribers/ada/addresses/push", json={"address": "x"}, headers=producer)
    assert got.status_code == 422


def test_category_team_channels_receive_the_categorys_notifications(
    make_runtime, apprise_receiver, monkeypatch, chat_harness
):
    team = apprise_receiver.url(path="team")
    monkeypatch.setenv("CLARION_CHAT__CATEGORY_TARGETS", f'{{"orders": ["{team}"]}}')
    rt = make_runtime(**FAST_RETRY)
    rows = notify(rt, "chat", recipients=("ada",), category="orders")
    assert [r.status for r in rows] == ["sent"] and rows[0].target == "category:orders:0"
    assert [r.status for r in notify(rt, "chat", category="billing")] == ["skipped"]
    assert apprise_receiver.paths == ["/team"]


def test_a_subscriber_url_that_turns_internal_is_refused_right_before_sending(rt):
    # Set through the repository (as if DNS changed after the API's check).
    set_address(rt, "ada", "chat", "json://192.168.1.20:8080/hook")
    [row] = notify(rt, "chat")
    assert row.status == "dead" and "address not allowed" in row.last_error


def test_apprise_logs_no_address(rt, caplog, apprise_receiver):
    secret = "T0SECRET/B0SECRET/XXSECRET"
    set_address(rt, "ada", "chat", f"json://127.0.0.1:{apprise_receiver.port}/{secret}")
    set_address(rt, "bo", "chat", f"slack://{secret}")  # no network here: a failure
    set_address(rt, "cy", "chat", f"nonsense://{secret}")  # Apprise logs it at ERROR
    apprise_receiver.status = 503
    with caplog.at_level(logging.DEBUG):
        rows = notify(rt, "chat", recipients=("ada", "bo", "cy"))
    assert sorted(r.status for r in rows) == ["dead", "dead", "skipped"]
    assert "apprise" in {r.name for r in caplog.records}  # it did log, redacted
    assert "SECRET" not in caplog.text


def test_erasing_a_subscriber_erases_their_addresses(api, rt, producer):
    for channel, address in (("sms", "+447911123456"), ("chat", "slack://T000/B000/XXXX")):
        put = api.put(
            f"/v1/subscribers/ada/addresses/{channel}", json={"address": address}, headers=producer
        )
        assert put.status_code == 200, put.text
    assert api.delete("/v1/subscribers/ada", headers=producer).status_code == 204
    with rt.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM subscriber_addresses")).scalar() == 0
    assert api.get("/v1/subscribers/ada/addresses/sms", headers=producer).status_code == 404


def test_a_group_of_outcomes_commits_together_and_each_keeps_its_own(
    rt, apprise_receiver, monkeypatch
):
    """chat records up to ``outcomes_per_commit`` outcomes in one statement: a send, a retry
    and a dead letter in one group each get their own row, attempt and letter."""
    for who in ("ada", "bo"):
        set_address(rt, who, "chat", apprise_receiver.url(path=who))
    set_address(rt, "cy", "chat", "json://192.168.1.20:8080/hook")  # refused: dead
    apprise_receiver.failures = 1  # the first send is retried
    groups = []
    original = outcome_rows.finish

    def finish(*, session, done, **kwargs):
        groups.append(len(done))
        return original(session=session, done=done, **kwargs)

    monkeypatch.setattr(outcome_rows, "finish", finish)
    rows = notify(rt, "chat", recipients=("ada", "bo", "cy"))
    assert groups == [3, 1]  # the first task's three outcomes, then the retry's
    assert sorted(r.status for r in rows) == ["dead", "sent", "sent"]
    assert sorted(tuple(outcomes(rt, r.id)) for r in rows) == [
        ("dead",),
        ("retry", "sent"),
        ("sent",),
    ]
    with rt.sessions() as s:
        letters = s.scalars(select(DeadLetter.delivery_id)).all()
    assert letters == [next(r.id for r in rows if r.status == "dead")]
    assert sorted(apprise_receiver.paths) == ["/ada", "/bo"]  # each accepted once
