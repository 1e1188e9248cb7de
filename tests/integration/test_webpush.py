"""Web push against a real local push service (VAPID checked, payload decrypted), through
the real pipeline on PostgreSQL and Redis, and the subscription API a browser calls."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select

from clarion.api.app import create_app
from clarion.channels.push.sender import MAX_PLAINTEXT, WebPushChannel
from clarion.cli import main as cli
from clarion.core import enqueue, queues, sweeper
from clarion.core.schemas import NotificationCreate
from clarion.db.models import DeadLetter, Delivery, Notification
from clarion.ids import utcnow
from clarion.settings import Settings
from tests.broker import drain
from tests.channels import FAST_RETRY, outcomes
from tests.channels.pushservice import unb64
from tests.conftest import LOCAL_PEERS, SECRET

PROBLEM = "application/problem+json"
SUBSCRIPTIONS = "/v1/me/push-subscriptions"


def notify(rt, recipients=("ada",), **fields) -> list:
    values = {"category": "links", "title": "Your link expires", "channels": ["push"], **fields}
    msg = enqueue.prepare(NotificationCreate(recipients=list(recipients), **values))
    enqueue.enqueue(rt.celery, msg)
    return [nid for nid, _ in msg.items]


def deliveries(rt, nid) -> list[Delivery]:
    with rt.sessions() as s:
        return list(s.scalars(select(Delivery).where(Delivery.notification_id == nid)))


@pytest.fixture
def rt(make_runtime, push_service):
    return make_runtime(
        **push_service.settings,
        push_icon_url="https://app.example/icon.png",
        push_ttl_seconds=600,
        **FAST_RETRY,
    )


@pytest.fixture
def api(rt):
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def browser(api, user, push_service):
    """Ada's browser, subscribed through the API as a site's service worker would."""
    b = push_service.subscribe()
    assert api.post(SUBSCRIPTIONS, json=b.json(), headers=user("ada")).status_code == 201
    return b


# -- delivery -------------------------------------------------------------------------------
def test_the_browser_decrypts_the_notification_with_urgency_ttl_and_topic(
    rt, browser, push_service
):
    [nid] = notify(
        rt,
        title="Your link <b>expires</b>",
        body="go.example/abc stops working tomorrow",
        url="https://app.example/links/abc",
        severity="critical",
        collapse_key="link-abc",
    )
    drain(rt.celery)

    [got] = push_service.received(browser)
    token = got.payload.pop("token")  # for the service worker (test_push_action_token_...)
    assert token.count(".") == 2
    assert got.payload == {
        "title": "Your link <b>expires</b>",
        "body": "go.example/abc stops working tomorrow",
        "url": "https://app.example/links/abc",
        "id": str(nid),
        "category": "links",
        "severity": "critical",
        "icon": "https://app.example/icon.png",
    }
    assert got.headers["urgency"] == "high" and got.headers["ttl"] == "600"
    assert got.headers["topic"] == "link-abc"
    assert got.claims["aud"] == push_service.origin and got.claims["sub"].startswith("mailto:")
    [row] = deliveries(rt, nid)
    assert row.status == "sent" and row.provider_ref.startswith(f"{push_service.origin}/message/")


def test_urgency_follows_severity_and_a_long_collapse_key_becomes_a_valid_topic(
    rt, browser, push_service
):
    for severity in ("low", "medium", "high"):
        notify(rt, severity=severity, collapse_key="report/2024-06 for ada@example.com")
        # Sent before the next one: an unsent one would be replaced (collapse) and skipped.
        drain(rt.celery)
    notify(rt)  # no collapse key: no Topic
    drain(rt.celery)

    got = push_service.received(browser)
    by_severity = {p.payload["severity"]: p.headers["urgency"] for p in got}
    assert by_severity == {"low": "low", "medium": "normal", "high": "high"}
    topics = [p.headers.get("topic") for p in got]
    assert topics[0] == topics[1] == topics[2] and topics[3] is None
    assert len(topics[0]) == 32 and topics[0].replace("-", "").replace("_", "").isalnum()


def test_every_device_of_the_user_receives_it(rt, api, user, browser, push_service):
    phone = push_service.subscribe()
    api.post(SUBSCRIPTIONS, json=phone.json(user_agent="phone"), headers=user("ada"))
    [nid] = notify(rt)
    drain(rt.celery)

    assert [p.payload["id"] for p in push_service.received(browser)] == [str(nid)]
    assert [p.payload["id"] for p in push_service.received(phone)] == [str(nid)]
    rows = deliveries(rt, nid)
    assert len(rows) == 2 and {r.status for r in rows} == {"sent"}


def test_a_notification_too_large_for_one_push_is_cut_to_fit(rt, browser, push_service):
    title = "Résumé " * 60  # 420 characters, kept whole
    notify(rt, title=title, body="🔔 alert " * 1000, url="https://app.example/x")
    drain(rt.celery)

    [got] = push_service.received(browser)
    assert got.size <= 4096  # what every push service must accept
    assert got.payload["title"] == title and got.payload["url"] == "https://app.example/x"
    assert got.payload["body"].startswith("🔔 alert 🔔") and got.payload["body"].endswith("…")
    plain = json.dumps(got.payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert MAX_PLAINTEXT - 10 <= len(plain) <= MAX_PLAINTEXT


def test_actions_reach_the_service_worker_as_notification_actions_with_their_urls(
    rt, browser, push_service
):
    actions = [
        {"id": "approve", "label": "Approve", "url": "https://app.example/approve/7"},
        {"id": "later", "label": "Later"},
    ]
    [nid] = notify(rt, actions=actions)
    drain(rt.celery)

    [got] = push_service.received(browser)
    # showNotification({actions}) takes action and title; the worker routes by url.
    assert got.payload["actions"] == [
        {"action": "approve", "title": "Approve", "url": "https://app.example/approve/7"},
        {"action": "later", "title": "Later", "url": None},
    ]
    assert got.payload["id"] == str(nid)  # to POST the click: …/{id}/actions/{action}


def test_the_push_token_lets_the_service_worker_mark_it_read_or_click_and_nothing_else(
    rt, api, user, browser, push_service
):
    both = {"channels": ["in_app", "push"]}
    [nid] = notify(rt, actions=[{"id": "ok", "label": "OK"}], **both)
    [other] = notify(rt, **both)
    [push_only] = notify(rt, actions=[{"id": "ok", "label": "OK", "url": "/p"}])
    drain(rt.celery)
    tokens = {p.payload["id"]: p.payload["token"] for p in push_service.received(browser)}
    worker = {"Authorization": f"Bearer {tokens[str(nid)]}"}
    inbox = "/v1/me/notifications"

    read = api.patch(f"{inbox}/{nid}", json={"read": True}, headers=worker)
    clicked = api.post(f"{inbox}/{nid}/actions/ok", headers=worker)
    archive = api.patch(f"{inbox}/{nid}", json={"archived": True}, headers=worker)
    elsewhere = api.patch(f"{inbox}/{other}", json={"read": True}, headers=worker)
    listing = api.get(inbox, headers=worker)
    alone = {"Authorization": f"Bearer {tokens[str(push_only)]}"}
    push_click = api.post(f"{inbox}/{push_only}/actions/ok", headers=alone)

    assert read.status_code == 200 and read.json()["read_at"] is not None
    assert clicked.status_code == 200 and clicked.json() == {"url": None}
    assert archive.status_code == 403
    assert elsewhere.status_code == listing.status_code == 401
    mine = {i["id"]: i for i in api.get(inbox, headers=user("ada")).json()["items"]}
    assert mine[str(other)]["read_at"] is None and mine[str(nid)]["archived_at"] is None
    # a notification sent by push only is no inbox item, but its click is recorded
    assert push_click.status_code == 200 and push_click.json() == {"url": "/p"}
    with rt.sessions() as s:
        assert s.get(Notification, push_only).actions[0]["clicked_at"] is not None


def test_actions_give_way_before_the_title_when_a_push_is_too_large(rt, browser, push_service):
    long = [
        {"id": f"a{i}", "label": "x", "url": "https://app.example/" + "p" * 1500} for i in range(3)
    ]
    notify(rt, title="Kept", body="b" * 100, actions=long)
    drain(rt.celery)

    [got] = push_service.received(browser)
    assert got.size <= 4096
    assert got.payload["title"] == "Kept" and got.payload["actions"] is None


def test_a_410_deactivates_the_subscription_and_later_notifications_skip_push(
    rt, api, user, browser, push_service
):
    push_service.script(browser.token, [410])
    [first] = notify(rt)
    drain(rt.celery)
    [second] = notify(rt, title="next")
    drain(rt.celery)

    [gone] = deliveries(rt, first)
    assert gone.status == "skipped" and "410" in gone.last_error
    [skipped] = deliveries(rt, second)
    assert skipped.status == "skipped" and skipped.last_error == "no push subscription"
    assert api.get(SUBSCRIPTIONS, headers=user("ada")).json() == []
    assert push_service.received(browser) == []


def test_a_429_is_retried_after_the_retry_after_the_push_service_asked_for(
    make_runtime, api, browser, push_service
):
    rt = make_runtime(**push_service.settings, retry_backoff_max_seconds=30)
    push_service.script(browser.token, [(429, {"Retry-After": "2"})])
    [nid] = notify(rt)
    drain(rt.celery)  # also runs the retry task at once: too early, it must not send

    [row] = deliveries(rt, nid)
    assert row.status == "failed" and row.attempts == 1
    wait = (row.next_attempt_at - row.updated_at).total_seconds()
    assert 1.9 <= wait <= 2.1
    assert [status for _, status, _ in push_service.log] == [429]

    time.sleep(max((row.next_attempt_at - utcnow()).total_seconds(), 0) + 0.05)
    sweeper.sweep(sessions=rt.sessions, settings=rt.settings, scheduler=rt)
    drain(rt.celery)

    [row] = deliveries(rt, nid)
    assert row.status == "sent" and row.attempts == 2
    assert outcomes(rt, row.id) == ["retry", "sent"]
    assert len(push_service.received(browser)) == 1


def test_a_503_is_retried_and_then_delivered(rt, browser, push_service):
    push_service.script(browser.token, [503, 503])
    [nid] = notify(rt)
    drain(rt.celery)

    [row] = deliveries(rt, nid)
    assert row.status == "sent" and outcomes(rt, row.id) == ["retry", "retry", "sent"]


def test_a_400_is_a_dead_letter_with_the_push_services_answer(rt, browser, push_service):
    push_service.default = (400, {})
    [nid] = notify(rt)
    drain(rt.celery, names=(queues.CREATE, queues.deliver_queue("push")))

    [row] = deliveries(rt, nid)
    # The status only: the push service's body ("scripted") is never stored.
    assert (row.status, row.last_error) == ("dead", "push service answered 400 Bad Request")
    with rt.sessions() as s:
        [letter] = s.scalars(select(DeadLetter)).all()
    assert letter.delivery_id == row.id and letter.channel == "push" and letter.attempts == 1


def test_a_redirect_is_not_followed_and_is_a_dead_letter(rt, browser, push_service):
    push_service.default = (301, {"Location": "http://127.0.0.1:9/elsewhere"})
    [nid] = notify(rt)
    drain(rt.celery, names=(queues.CREATE, queues.deliver_queue("push")))

    [row] = deliveries(rt, nid)
    assert row.status == "dead" and "redirect" in row.last_error
    assert len(push_service.log) == 1  # nothing went to the Location


def test_an_unreachable_push_service_is_retryable(push_service):
    from clarion.channels import RetryableChannelError

    channel = WebPushChannel(Settings(secret_key=SECRET, **push_service.settings))
    browser = push_service.subscribe()
    target = {"endpoint": "http://127.0.0.1:9/push/x", "keys": browser.json()["keys"]}
    payload = {"data": b"{}", "headers": {"TTL": "60"}, "ttl": 60}
    with pytest.raises(RetryableChannelError, match="unreachable"):
        channel.send(payload, target)
    channel.close()


def test_a_kept_alive_connection_the_server_closed_while_idle_is_reopened_not_lost():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from clarion.channels.fastpost import FastPost
    from clarion.channels.outbound import OutboundPolicy

    peers = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 0.2  # the server drops a connection idle this long

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            peers.append(self.client_address)
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = FastPost(OutboundPolicy(LOCAL_PEERS), connect_timeout=2, read_timeout=2)
    url = f"http://127.0.0.1:{server.server_address[1]}/push/x"
    try:
        answers = [client.post(url, b"a", {}).status, client.post(url, b"b", {}).status]
        time.sleep(0.5)  # the server closes the idle connection
        answers.append(client.post(url, b"c", {}).status)
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert answers == [201, 201, 201]
    assert peers[0] == peers[1] != peers[2]  # kept alive, then reopened


def test_one_vapid_signature_serves_many_sends(rt, api, user, browser, push_service):
    notify(rt, recipients=("ada",), title="one")
    notify(rt, recipients=("ada",), title="two")
    drain(rt.celery)

    assert len(push_service.received(browser)) == 2
    assert len(push_service.tokens) == 1


def test_another_users_endpoint_is_refused_not_taken_over(rt, api, user, browser, push_service):
    [nid] = notify(rt)
    drain(rt.celery, names=(queues.CREATE,))  # queued for ada's browser, not yet sent
    mallory = {**push_service.subscribe().json(), "endpoint": browser.endpoint}  # her own keys
    taken = api.post(SUBSCRIPTIONS, json=mallory, headers=user("mallory"))
    drain(rt.celery)

    assert taken.status_code == 409 and taken.headers["content-type"] == PROBLEM
    assert taken.json()["type"] == "urn:clarion:problem:push-endpoint-taken"
    [row] = deliveries(rt, nid)
    assert row.status == "sent" and len(push_service.received(browser)) == 1  # still ada's
    assert [s["endpoint"] for s in api.get(SUBSCRIPTIONS, headers=user("ada")).json()] == [
        browser.endpoint
    ]
    assert api.get(SUBSCRIPTIONS, headers=user("mallory")).json() == []
    # A browser that really changed hands: the previous owner unsubscribes it first.
    query = {"endpoint": browser.endpoint}
    assert api.delete(SUBSCRIPTIONS, params=query, headers=user("ada")).status_code == 204
    assert api.post(SUBSCRIPTIONS, json=browser.json(), headers=user("bob")).status_code == 201


def test_without_vapid_keys_push_deliveries_are_skipped_with_the_reason(runtime):
    [nid] = notify(runtime)
    drain(runtime.celery)

    [row] = deliveries(runtime, nid)
    assert row.status == "skipped" and "CLARION_VAPID_PRIVATE_KEY" in row.last_error


# -- configuration ----------------------------------------------------------------------------
def settings_with(**overrides) -> Settings:
    return Settings(secret_key=SECRET, **overrides)


# Wrong settings (bad key, mismatched pair, bad subject): test_channel_contract.py.
def test_a_pem_private_key_works_too():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    channel = WebPushChannel(
        settings_with(vapid={"private_key": pem, "subject": "https://a.example"})
    )
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert unb64(channel.public_key) == point


def test_vapid_generate_prints_keys_that_build_a_working_channel(capsys, monkeypatch, push_service):
    cli(["vapid", "generate"])
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    private, public = lines["CLARION_VAPID_PRIVATE_KEY"], lines["CLARION_VAPID_PUBLIC_KEY"]
    monkeypatch.setattr(push_service, "vapid_public", public)  # the browser subscribed with it
    channel = WebPushChannel(
        settings_with(
            vapid={"private_key": private, "public_key": public, "subject": "mailto:a@b.example"},
            push_allow_http_endpoints=True,
            outbound_allowed_networks=LOCAL_PEERS,
        )
    )
    b = push_service.subscribe()
    target = {"endpoint": b.endpoint, "keys": {"p256dh": b.p256dh, "auth": b.auth}}
    payload = {"data": b'{"title":"hi"}', "headers": {"TTL": "60"}, "ttl": 60}

    assert channel.send(payload, target).startswith(push_service.origin)
    assert push_service.received(b)[0].payload == {"title": "hi"}


def test_vapid_generate_write_makes_a_private_env_file_and_never_overwrites(tmp_path):
    path = tmp_path / "vapid.env"
    cli(["vapid", "generate", "--write", str(path)])
    first = path.read_text()

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.startswith("CLARION_VAPID_PRIVATE_KEY=") and "CLARION_VAPID_PUBLIC_KEY=" in first
    with pytest.raises(SystemExit):
        cli(["vapid", "generate", "--write", str(path)])
    assert path.read_text() == first


# -- the subscription API ------------------------------------------------------------------------
def test_the_vapid_public_key_is_public(api, client, push_service):
    configured = api.get("/v1/push/vapid-public-key")
    missing = client.get("/v1/push/vapid-public-key")

    assert configured.status_code == 200
    assert configured.json() == {"public_key": push_service.vapid_public}
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["type"] == "urn:clarion:problem:push-not-configured"


def test_subscribing_again_updates_and_several_devices_are_listed(api, user, push_service):
    laptop, phone = push_service.subscribe(), push_service.subscribe()
    created = api.post(SUBSCRIPTIONS, json=laptop.json(user_agent="Firefox"), headers=user("ada"))
    again = api.post(
        SUBSCRIPTIONS,
        json=laptop.json(user_agent="Firefox 2", expirationTime=None),
        headers=user("ada"),
    )
    api.post(SUBSCRIPTIONS, json=phone.json(), headers=user("ada"))
    listed = api.get(SUBSCRIPTIONS, headers=user("ada")).json()

    assert created.status_code == 201 and again.status_code == 200
    assert set(created.json()) == {"id", "endpoint", "user_agent", "created_at"}
    assert again.json()["id"] == created.json()["id"]
    assert again.json()["user_agent"] == "Firefox 2"
    assert [s["endpoint"] for s in listed] == [laptop.endpoint, phone.endpoint]
    assert api.get(SUBSCRIPTIONS, headers=user("bob")).json() == []


def test_a_deactivated_subscription_posted_again_is_active_again(
    rt, api, user, browser, push_service
):
    push_service.script(browser.token, [410])
    notify(rt)
    drain(rt.celery)
    assert api.get(SUBSCRIPTIONS, headers=user("ada")).json() == []

    again = api.post(SUBSCRIPTIONS, json=browser.json(), headers=user("ada"))
    [nid] = notify(rt, title="back")
    drain(rt.celery)

    assert again.status_code == 200
    assert [p.payload["id"] for p in push_service.received(browser)] == [str(nid)]


def test_one_notification_reaches_at_most_the_capped_number_of_browsers(
    make_runtime, user, push_service
):
    rt = make_runtime(**push_service.settings, push_max_subscriptions_per_user=3)
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as api:
        browsers = [push_service.subscribe() for _ in range(5)]
        for b in browsers:
            assert api.post(SUBSCRIPTIONS, json=b.json(), headers=user("ada")).status_code == 201
        # Re-registering the oldest one kept makes it the newest: the next one replaces
        # the one refreshed longest ago instead.
        api.post(SUBSCRIPTIONS, json=browsers[2].json(), headers=user("ada"))
        newest = push_service.subscribe()
        api.post(SUBSCRIPTIONS, json=newest.json(), headers=user("ada"))
        listed = api.get(SUBSCRIPTIONS, headers=user("ada")).json()
    kept = [browsers[2], browsers[4], newest]
    assert sorted(s["endpoint"] for s in listed) == sorted(b.endpoint for b in kept)

    [nid] = notify(rt)
    drain(rt.celery)
    assert len(deliveries(rt, nid)) == 3
    assert {b.endpoint for b in browsers + [newest] if push_service.received(b)} == {
        b.endpoint for b in kept
    }


def test_the_default_cap_is_ten_browsers_per_user(api, user, push_service):
    for _ in range(11):
        b = push_service.subscribe()
        assert api.post(SUBSCRIPTIONS, json=b.json(), headers=user("ada")).status_code == 201
    assert len(api.get(SUBSCRIPTIONS, headers=user("ada")).json()) == 10
    assert len(api.get(SUBSCRIPTIONS, headers=user("bob")).json()) == 0


def test_unsubscribing_removes_only_your_own(api, user, browser):
    query = {"endpoint": browser.endpoint}
    others = api.delete(SUBSCRIPTIONS, params=query, headers=user("bob"))
    mine = api.delete(SUBSCRIPTIONS, params=query, headers=user("ada"))
    twice = api.delete(SUBSCRIPTIONS, params=query, headers=user("ada"))

    assert others.status_code == 404 and others.headers["content-type"] == PROBLEM
    assert mine.status_code == 204 and twice.status_code == 404
    assert api.get(SUBSCRIPTIONS, headers=user("ada")).json() == []


def test_the_subscription_api_needs_a_user_token(api, push_service):
    assert api.get(SUBSCRIPTIONS).status_code == 401
    assert api.post(SUBSCRIPTIONS, json=push_service.subscribe().json()).status_code == 401


BAD = {
    "p256dh-too-short": lambda b: b["keys"].update(p256dh=b["keys"]["p256dh"][:40]),
    "p256dh-not-base64": lambda b: b["keys"].update(p256dh="!" * 87),
    "p256dh-not-a-point": lambda b: b["keys"].update(p256dh="BA" + "A" * 85),
    "auth-not-16-bytes": lambda b: b["keys"].update(auth="AAAA"),
    "keys-missing": lambda b: b.pop("keys"),
    "endpoint-ftp": lambda b: b.update(endpoint="ftp://push.example/x"),
    "endpoint-no-host": lambda b: b.update(endpoint="https:///x"),
    "endpoint-too-long": lambda b: b.update(endpoint="https://push.example/" + "a" * 2048),
    "unknown-field": lambda b: b.update(extra="x"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_subscriptions_are_422_problems(api, user, push_service, case):
    body = push_service.subscribe().json()
    BAD[case](body)
    response = api.post(SUBSCRIPTIONS, json=body, headers=user("ada"))

    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:clarion:problem:validation-error"


def test_plain_http_endpoints_are_refused_unless_allowed(client, user, push_service):
    # `client` runs with the default settings: push endpoints must be https.
    response = client.post(SUBSCRIPTIONS, json=push_service.subscribe().json(), headers=user("ada"))

    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["body", "endpoint"]
    https = push_service.subscribe().json()
    https["endpoint"] = "https://push.example/abc"
    assert client.post(SUBSCRIPTIONS, json=https, headers=user("ada")).status_code == 201
