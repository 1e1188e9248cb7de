"""SSRF: webhooks and web push reach only the public internet, checked when a URL is
registered and again when the worker connects, against real peers (the webhook receiver
and the push service on 127.0.0.1, which the default policy refuses).

The runtimes here run with the default policy (``outbound_allowed_networks=[]``) unless a
test allows loopback to reach a peer on purpose. Local peers: tests/channels/ (the
receiver, the push service, and outbound_peers.py).
"""

from __future__ import annotations

import logging
import ssl
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clarion.api.app import create_app
from clarion.channels import Message, PermanentChannelError, RetryableChannelError
from clarion.channels.fastpost import FastPost
from clarion.channels.httpclient import OutboundHttp
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy
from clarion.channels.push.sender import WebPushChannel
from clarion.channels.webhook.sender import WebhookChannel
from clarion.db.models import DeadLetter, Delivery, DeliveryAttempt
from tests.broker import drain
from tests.channels import FAST_RETRY
from tests.channels.outbound_peers import SECRET_BODY, answers
from tests.conftest import LOCAL_PEERS, make_key, server_settings

PROBLEM = "application/problem+json"
HOOKS, SUBSCRIPTIONS, SEND = "/v1/webhooks", "/v1/me/push-subscriptions", "/v1/notifications"
# Hosts of URLs that must be refused: each is, or resolves to, an internal address.
FORBIDDEN = [
    "127.0.0.1",
    "localhost",  # a name resolving to loopback (/etc/hosts)
    "LOCALHOST",
    "10.1.2.3",
    "172.16.5.4",
    "192.168.0.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "0",
    "224.0.0.1",
    "2130706433",  # decimal
    "0177.0.0.1",  # octal
    "0x7f.0.0.1",  # hex
    "127.1",  # short
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:a9fe:a9fe]",  # IPv4-mapped metadata, in hex
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::10.0.0.1]",  # NAT64 of a private address
    "[2002:a9fe:a9fe::1]",  # 6to4 of the metadata address
    "[fd00::1]",
    "[fe80::1%25lo]",  # link-local with a zone id
    "[ff02::1]",
]
PUBLIC = ["93.184.216.34", "[2606:4700:4700::1111]", "[64:ff9b::8.8.8.8]", "hooks.example"]


@pytest.fixture
def strict(make_runtime, push_service):
    """Push configured, and the default outbound policy: nothing but the public internet."""
    return make_runtime(**{**push_service.settings, "outbound_allowed_networks": []}, **FAST_RETRY)


@pytest.fixture
def api(strict):
    with TestClient(create_app(runtime=strict), raise_server_exceptions=False) as c:
        yield c


def admin(rt) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(rt, 'admin')}"}


def refused(response, field: str) -> bool:
    if response.status_code != 422 or response.headers["content-type"] != PROBLEM:
        return False
    body = response.json()
    return (
        body["type"] == "urn:clarion:problem:url-not-allowed"
        and body["errors"][0]["loc"] == ["body", field]
        and body["errors"][0]["type"] == "url_not_allowed"
    )


# -- registration ----------------------------------------------------------------------
def test_webhook_urls_on_internal_hosts_are_refused_on_create_and_update(api, strict):
    headers = admin(strict)
    created = [h for h in FORBIDDEN if not refused(post_hook(api, headers, h), "url")]
    assert created == []
    assert api.get(HOOKS, headers=headers).json() == []

    hook = post_hook(api, headers, "93.184.216.34").json()
    url = f"{HOOKS}/{hook['id']}"
    for host in FORBIDDEN:
        assert refused(api.patch(url, json={"url": hook_url(host)}, headers=headers), "url"), host
    assert api.get(url, headers=headers).json()["url"] == hook["url"]  # unchanged


def test_push_endpoints_on_internal_hosts_are_refused(api, user, push_service):
    keys = push_service.subscribe().json()["keys"]
    taken = []
    for host in FORBIDDEN:
        body = {"endpoint": f"https://{host}/push/x", "keys": keys}
        if not refused(api.post(SUBSCRIPTIONS, json=body, headers=user("ada")), "endpoint"):
            taken.append(host)
    assert taken == []
    assert api.get(SUBSCRIPTIONS, headers=user("ada")).json() == []


def test_public_hosts_and_names_not_resolvable_yet_are_accepted(api, strict, user, push_service):
    keys = push_service.subscribe().json()["keys"]
    for host in PUBLIC:
        assert post_hook(api, admin(strict), host).status_code == 201, host
        body = {"endpoint": f"https://{host}/push/{uuid.uuid4()}", "keys": keys}
        assert api.post(SUBSCRIPTIONS, json=body, headers=user("ada")).status_code == 201, host


def test_allowed_networks_let_a_local_receiver_through(
    api, strict, make_runtime, producer, webhook_receiver
):
    url = webhook_receiver.url()
    assert refused(api.post(HOOKS, json={"url": url}, headers=admin(strict)), "url")

    allowed = make_runtime(outbound_allowed_networks=LOCAL_PEERS)
    with TestClient(create_app(runtime=allowed), raise_server_exceptions=False) as local:
        created = local.post(HOOKS, json={"url": url}, headers=admin(allowed))
        assert created.status_code == 201
        webhook_receiver.trust(url, created.json()["secret"])
        [nid] = notify(local, producer)
    drain(allowed.celery)
    assert [d.status for d in deliveries(allowed, nid)] == ["sent"]
    assert len(webhook_receiver.deliveries) == 1


# -- connect time -------------------------------------------------------------------------
def test_a_stored_endpoint_on_an_internal_address_is_never_called(
    api, strict, producer, webhook_harness, push_harness, push_service, webhook_receiver
):
    # Rows registered before the check existed, or written around the API.
    webhook_harness.add_target(strict, "ada")
    browser = push_harness.add_target(strict, "ada")
    [nid] = notify(api, producer, channels=["webhook", "push"])
    drain(strict.celery)

    refusal = "connect: address not allowed (127.0.0.1: loopback)"
    assert {(d.channel, d.status, d.last_error) for d in deliveries(strict, nid)} == {
        ("webhook", "dead", refusal),
        ("push", "dead", refusal),
    }
    assert webhook_receiver.requests == [] and push_service.received(browser) == []
    assert push_service.log == []


def test_dns_rebinding_between_the_check_and_the_connection_is_refused(
    pg_url, push_service, webhook_receiver
):
    settings = server_settings(pg_url, **{**push_service.settings, "outbound_allowed_networks": []})
    browser = push_service.subscribe()
    for channel, url, target in (
        (WebhookChannel(settings), f"http://rebind.test:{webhook_receiver.port}/hook", {}),
        (
            WebPushChannel(settings),
            f"http://rebind.test:{push_service.port}/push/{browser.token}",
            {"keys": browser.json()["keys"]},
        ),
    ):
        # Public when the URL is registered, loopback when the worker connects.
        channel.policy.resolver = answers("93.184.216.34", "127.0.0.1")
        channel.policy.check_url(url)
        target = {**target, "url": url, "endpoint": url, "secret": "whsec_" + "a" * 44}
        with pytest.raises(PermanentChannelError, match=r"address not allowed \(127.0.0.1: "):
            channel.send(channel.render(message(), target), target)
        channel.close()
    assert webhook_receiver.requests == [] and push_service.log == []


def test_a_rebound_name_is_recorded_as_refused_and_the_check_uses_the_connected_address(
    api, strict, make_runtime, producer, webhook_receiver
):
    url = f"http://rebind.test:{webhook_receiver.port}/hook"  # does not resolve: accepted
    created = api.post(HOOKS, json={"url": url}, headers=admin(strict))
    assert created.status_code == 201
    webhook_receiver.trust(url, created.json()["secret"])
    strict.channels.get("webhook").policy.resolver = answers("127.0.0.1")
    [nid] = notify(api, producer)
    drain(strict.celery)

    shown = api.get(f"{SEND}/{nid}", headers=producer).json()
    [delivery] = [d for d in shown["deliveries"] if d["channel"] == "webhook"]
    assert delivery["status"] == "dead"
    assert delivery["last_error"] == "connect: address not allowed (127.0.0.1: loopback)"
    assert webhook_receiver.requests == []

    # Allowed, the same resolver's answer is where the request goes: the name is never
    # looked up again by the HTTP client (the system cannot resolve rebind.test at all).
    allowed = make_runtime(outbound_allowed_networks=LOCAL_PEERS)
    allowed.channels.get("webhook").policy.resolver = answers("127.0.0.1")
    with TestClient(create_app(runtime=allowed), raise_server_exceptions=False) as local:
        [nid] = notify(local, producer)
    drain(allowed.celery)
    assert [d.status for d in deliveries(allowed, nid)] == ["sent"]
    assert webhook_receiver.deliveries[0].headers["host"] == f"rebind.test:{webhook_receiver.port}"


def test_tls_keeps_the_urls_name_for_sni_and_the_certificate_while_connecting_to_the_checked_ip(
    tls_server,
):
    port, cert, seen = tls_server
    url = f"https://rebind.test:{port}/hook"  # the system cannot resolve it: only the policy
    trust = ssl.create_default_context(cafile=str(cert))
    policy = OutboundPolicy(LOCAL_PEERS, resolver=answers("127.0.0.1"))
    for cls in (OutboundHttp, FastPost):  # the one client and push's fast path
        client = cls(policy, connect_timeout=5, read_timeout=5, verify=trust)
        assert client.post(url, b"a", {}).status == 200
        assert client.post(url, b"b", {}).status == 200
        client.close()
    assert seen == [("rebind.test", f"rebind.test:{port}")] * 4  # (SNI, Host)
    for cls in (OutboundHttp, FastPost):
        refusing = cls(
            OutboundPolicy(resolver=answers("127.0.0.1")), connect_timeout=5, read_timeout=5
        )
        with pytest.raises(AddressNotAllowed):
            refusing.post(url, b"c", {})
        # The certificate is checked against the URL's name, not the address connected to.
        wrong = cls(policy, connect_timeout=5, read_timeout=5, verify=trust)
        with pytest.raises((httpx.ConnectError, ssl.SSLError), match="CERTIFICATE_VERIFY"):
            wrong.post(f"https://other.test:{port}/hook", b"d", {})
    assert len(seen) == 4


# -- what a failed call leaves behind -------------------------------------------------------
def test_an_internal_answer_is_never_readable_through_errors_the_api_or_logs(
    make_runtime, producer, webhook_receiver, garbage_server, caplog
):
    caplog.set_level(logging.DEBUG)
    rt = make_runtime(outbound_allowed_networks=LOCAL_PEERS, delivery_max_attempts=2, **FAST_RETRY)
    webhook_receiver.answer(500, body=SECRET_BODY, times=2)
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as api:
        for url in (webhook_receiver.url("leaky"), garbage_server):
            created = api.post(HOOKS, json={"url": url}, headers=admin(rt))
            if url != garbage_server:
                webhook_receiver.trust(url, created.json()["secret"])
        [nid] = notify(api, producer)
        drain(rt.celery)
        shown = api.get(f"{SEND}/{nid}", headers=producer).text
        letters = api.get("/v1/dead-letters", headers=admin(rt)).text

    with rt.sessions() as s:
        stored = [d.last_error for d in s.scalars(select(Delivery))]
        stored += [a.error for a in s.scalars(select(DeliveryAttempt))]
        stored += [d.error for d in s.scalars(select(DeadLetter))]
    assert sorted(d.status for d in deliveries(rt, nid)) == ["dead", "dead"]
    assert "gave up after 2 attempts: HTTP 500 Internal Server Error" in stored
    assert "gave up after 2 attempts: RemoteProtocolError" in stored
    for text in (*stored, shown, letters, caplog.text):
        assert SECRET_BODY not in (text or "")


def test_a_push_service_that_is_not_http_leaves_only_the_failure_type(
    pg_url, push_service, garbage_server
):
    channel = WebPushChannel(server_settings(pg_url, **push_service.settings))
    keys = push_service.subscribe().json()["keys"]
    target = {"endpoint": garbage_server.replace("/hook", "/push/x"), "keys": keys}
    with pytest.raises(RetryableChannelError) as raised:
        channel.send({"data": b"{}", "headers": {"TTL": "60"}, "ttl": 60}, target)
    channel.close()
    assert str(raised.value) == "push service unreachable: BadStatusLine"


# -- proxies ------------------------------------------------------------------------------
def test_proxies_and_netrc_from_the_environment_are_ignored(
    pg_url, webhook_receiver, recording_proxy, monkeypatch, tmp_path
):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, recording_proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login ops password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    channel = WebhookChannel(server_settings(pg_url))
    target = trusted_target(webhook_receiver)

    assert channel.send(channel.render(message(), target), target) == "HTTP 200"
    channel.close()
    assert recording_proxy.lines == []
    [got] = webhook_receiver.deliveries
    assert "authorization" not in got.headers


def test_the_explicit_proxy_carries_webhooks_and_pushes_after_the_target_check(
    pg_url, webhook_receiver, push_service, recording_proxy
):
    proxy = recording_proxy.url.replace("http://", "http://ops:pw@")
    browser = push_service.subscribe()
    push_url = f"{push_service.origin}/push/{browser.token}"
    hook = trusted_target(webhook_receiver)
    push = {"endpoint": push_url, "keys": browser.json()["keys"]}
    settings = {**push_service.settings, "outbound_proxy": proxy}

    refusing = server_settings(pg_url, **{**settings, "outbound_allowed_networks": []})
    for channel, target in ((WebhookChannel(refusing), hook), (WebPushChannel(refusing), push)):
        with pytest.raises(PermanentChannelError, match="127.0.0.1: loopback"):
            channel.send(channel.render(message(), target), target)
        channel.close()
    assert recording_proxy.lines == []

    allowing = server_settings(pg_url, **settings)
    for channel, target in ((WebhookChannel(allowing), hook), (WebPushChannel(allowing), push)):
        channel.send(channel.render(message(), target), target)
        channel.close()
    assert [line.split()[:2] for line in recording_proxy.lines] == [
        ["POST", hook["url"]],
        ["POST", push_url],
    ]
    assert recording_proxy.auth == ["Basic b3BzOnB3"] * 2  # ops:pw
    assert webhook_receiver.requests == [] and push_service.log == []  # the proxy answered


# -- helpers and local peers ----------------------------------------------------------------
def hook_url(host: str) -> str:
    return f"http://{host}:8080/hook"


def post_hook(api, headers, host: str):
    return api.post(HOOKS, json={"url": hook_url(host)}, headers=headers)


def notify(api, producer, channels=("webhook",)) -> list[str]:
    payload = {"recipients": ["ada"], "category": "links", "title": "t", "channels": channels}
    response = api.post(SEND, json=payload, headers=producer)
    assert response.status_code == 202, response.text
    return [n["id"] for n in response.json()["notifications"]]


def deliveries(rt, nid: str) -> list[Delivery]:
    with rt.sessions() as s:
        query = select(Delivery).where(Delivery.notification_id == uuid.UUID(nid))
        return list(s.scalars(query.where(Delivery.channel != "in_app")))


def message() -> Message:
    notification = {"id": str(uuid.uuid4()), "category": "links", "title": "t"}
    notification |= {"severity": "medium"}
    return Message(uuid.uuid4(), 1, notification, {"id": "ada"})


def trusted_target(receiver) -> dict:
    secret = "whsec_" + "a" * 44
    receiver.trust(receiver.url(), secret)
    return {"url": receiver.url(), "secret": secret}
