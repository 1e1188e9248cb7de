"""A real peer for the Apprise channels (chat, sms), and their contract harnesses.

``apprise_receiver`` is an HTTP/1.1 server on 127.0.0.1 that takes what Apprise's own
``json://`` notifier POSTs (``{"title", "message", "type", ...}`` plus the ``:key=value``
extras of the URL) and answers with the current mode's status. So a send goes through
Clarion's channel, Apprise's URL parsing and its JSON notifier, and real HTTP; what is
*not* real is the chat service or SMS gateway: Slack, Twilio, ... are not called.

Apprise tells a channel only True or False, so the peer can only make a send succeed or
fail (retryable). The harnesses reach the permanent and gone outcomes the way they happen
with Apprise in production: "permanent" points the subscriber's chat URL at an address
the outbound policy refuses (a private network), "gone" stores a URL Apprise no longer
parses. The sms channel has neither (its URL is the operator's): its harness says so.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from clarion.channels import addresses as sealing
from clarion.db import addresses, subscribers
from clarion.db.models import SubscriberAddress
from clarion.db.session import transaction
from clarion.ids import utcnow

STATUS = {"ok": 200, "transient": 503}


@dataclass
class AppriseReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    status: int = 200
    # Answer 503 to this many requests first, whatever the status.
    failures: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, scheme: str = "json", path: str = "chat") -> str:
        return f"{scheme}://{self.host}:{self.port}/{path}"

    def accepted(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)


def _handler(receiver: AppriseReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver._lock:
                status = 503 if receiver.failures > 0 else receiver.status
                receiver.failures = max(receiver.failures - 1, 0)
            if status < 300:
                with receiver._lock:
                    receiver.received.append(json.loads(body))
                    receiver.paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def apprise_receiver():
    receiver = AppriseReceiver()
    server = ThreadingHTTPServer((receiver.host, 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def set_address(runtime, recipient: str, channel: str, value: str) -> None:
    """Store an address as the API does (sealed), without the API's validation."""
    with transaction(runtime.sessions) as session:
        subscribers.ensure(session=session, ids=[recipient], now=utcnow())
        addresses.put(
            session=session,
            subscriber_id=recipient,
            channel=channel,
            sealed=sealing.seal(runtime.settings, value),
            display="test",
            now=utcnow(),
        )


def address_active(runtime, recipient: str, channel: str) -> bool:
    with runtime.sessions() as session:
        row = session.execute(
            select(SubscriberAddress.deactivated_at).where(
                SubscriberAddress.subscriber_id == recipient, SubscriberAddress.channel == channel
            )
        ).one_or_none()
    return row is not None and row[0] is None


@dataclass
class _AppriseHarness:
    receiver: AppriseReceiver
    key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    # Each send may take 2 × the 2 s timeout the fixtures set: more than a 1 s lease.
    bad_settings: list[dict[str, Any]] = field(
        default_factory=lambda: [{"delivery_lease_seconds": 1}]
    )
    gone: bool = False
    permanent: bool = False
    mode: str = "ok"
    recipients: dict[str, Any] = field(default_factory=dict)

    def respond(self, mode: str) -> None:
        self.mode = mode
        self.receiver.status = STATUS.get(mode, 200)

    def received(self) -> int:
        return len(self.receiver.accepted())

    def target_active(self, runtime, recipient: str) -> bool:
        return address_active(runtime, recipient, self.key)


@dataclass
class ChatHarness(_AppriseHarness):
    key: str = "chat"
    gone: bool = True
    permanent: bool = True

    def add_target(self, runtime, recipient: str) -> None:
        url = {
            "permanent": "json://10.1.2.3:9/chat",  # private: refused right before sending
            "gone": "unknown-service://token",  # Apprise does not parse it (any more)
        }.get(self.mode, self.receiver.url())
        set_address(runtime, recipient, self.key, url)


@dataclass
class SmsHarness(_AppriseHarness):
    key: str = "sms"
    phone: str = "+33612345678"

    def add_target(self, runtime, recipient: str) -> None:
        set_address(runtime, recipient, self.key, self.phone)


@pytest.fixture
def chat_harness(apprise_receiver, monkeypatch) -> ChatHarness:
    monkeypatch.setenv("CLARION_CHAT__TIMEOUT", "2")
    return ChatHarness(apprise_receiver)


@pytest.fixture
def sms_harness(apprise_receiver, monkeypatch) -> SmsHarness:
    # Apprise's JSON notifier with the number in the payload (":to="), as an SMS gateway's
    # HTTP API would take it.
    monkeypatch.setenv("CLARION_SMS__URL", apprise_receiver.url(path="sms") + "?:to={phone}")
    monkeypatch.setenv("CLARION_SMS__TIMEOUT", "2")
    return SmsHarness(apprise_receiver)
