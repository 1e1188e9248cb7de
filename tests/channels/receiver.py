"""A real webhook receiver for the tests, and the webhook channel's contract harness.

``webhook_receiver`` is an HTTP/1.1 server on 127.0.0.1 (a free port, a background
thread) that checks every request the way a producer's receiver would: with the
independent ``standardwebhooks`` library, never with Clarion's own signing code. A request
whose signature does not verify is answered 400 and recorded as rejected; a verified one
gets the next scripted answer (``answer(503, times=2)``, ``answer(429, retry_after="1")``,
``answer(200, delay=2.0)`` for one slower than the channel's timeout), or the default one.

Several endpoints share the server, one per path: ``url("a")`` and ``trust(url, secret)``
with the secret the admin API returned for the endpoint.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from clarion.channels.webhook.sender import new_secret
from clarion.db import webhooks
from clarion.db.models import WebhookEndpoint
from clarion.db.session import transaction
from clarion.ids import utcnow


@dataclass(frozen=True)
class Answer:
    """What the receiver answers a verified request."""

    status: int = 200
    retry_after: str | None = None
    # Seconds to wait before answering: longer than the channel's timeout, it times out.
    delay: float = 0.0
    body: str = ""


@dataclass
class Received:
    """One request as it arrived, and what the receiver made of it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool
    error: str | None = None
    # The client's port: requests on one keep-alive connection share it.
    peer_port: int = 0

    @property
    def id(self) -> str | None:
        return self.headers.get("webhook-id")

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    default: Answer = field(default_factory=Answer)
    requests: list[Received] = field(default_factory=list)
    _secrets: dict[str, str] = field(default_factory=dict)
    _script: deque[Answer] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str = "hook") -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def trust(self, url: str, secret: str) -> None:
        """Verify requests to ``url``'s path with ``secret`` (replacing any earlier one)."""
        with self._lock:
            self._secrets[urlsplit(url).path] = secret

    def answer(self, status: int, *, times: int = 1, **options: Any) -> None:
        """Script the next ``times`` answers to verified requests."""
        with self._lock:
            self._script.extend([Answer(status, **options)] * times)

    @property
    def deliveries(self) -> list[Received]:
        """Verified requests that were answered 2xx."""
        with self._lock:
            return [r for r in self.requests if r.verified and 200 <= r.status < 300]

    @property
    def rejected(self) -> list[Received]:
        """Requests whose signature did not verify."""
        with self._lock:
            return [r for r in self.requests if not r.verified]

    def handle(self, path: str, headers: dict[str, str], body: bytes, port: int) -> Answer:
        """Verify one request, record it, and choose the answer."""
        with self._lock:
            secret = self._secrets.get(path)
        try:
            if secret is None:
                raise WebhookVerificationError(f"no endpoint at {path}")
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError as exc:
            answer, error, verified = Answer(400, body=str(exc)), str(exc), False
        else:
            with self._lock:
                answer = self._script.popleft() if self._script else self.default
            error, verified = None, True
        with self._lock:
            self.requests.append(
                Received(path, headers, body, answer.status, verified, error, peer_port=port)
            )
        return answer


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = receiver.handle(self.path, headers, body, self.client_address[1])
            if answer.delay and receiver._closing.wait(answer.delay):
                return
            data = answer.body.encode()
            try:
                self.send_response(answer.status)
                if answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                if 300 <= answer.status < 400:
                    self.send_header("Location", "https://elsewhere.example/hook")
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def webhook_receiver():
    """A running receiver; stopped (slow answers abandoned) after the test."""
    receiver = WebhookReceiver()
    server = ThreadingHTTPServer((receiver.host, 0), _handler(receiver))
    server.daemon_threads = True
    server.block_on_close = False
    receiver.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="webhook-receiver", daemon=True
    )
    thread.start()
    yield receiver
    receiver._closing.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# -- the contract harness (tests/channels/__init__.py) ---------------------------------
MODES = {"ok": 200, "transient": 503, "permanent": 400, "gone": 410}


@dataclass
class WebhookHarness:
    """The webhook channel against the receiver.

    Webhook targets belong to a category, not to a recipient: every endpoint receives
    every recipient's notifications. So ``add_target`` registers one endpoint (for all
    categories) on its first call and reuses it after; each recipient then has exactly
    one target, and ``target_active`` is that endpoint's state, whoever asks.
    """

    receiver: WebhookReceiver
    key: str = "webhook"
    # Short enough that a stuck send cannot stall a test for long.
    settings: dict[str, Any] = field(default_factory=lambda: {"webhook_timeout_seconds": 2.0})
    # A non-positive timeout is refused by Settings itself (a ValidationError, before any
    # channel exists). What building the channel refuses is one send that could outlast
    # the delivery lease: a 60 s timeout under a 30 s lease.
    bad_settings: list[dict[str, Any]] = field(
        default_factory=lambda: [{"webhook_timeout_seconds": 60.0, "delivery_lease_seconds": 30}]
    )
    gone: bool = True
    endpoint: uuid.UUID | None = None

    def add_target(self, runtime, recipient: str) -> None:
        if self.endpoint is not None:
            return
        url, secret = self.receiver.url("contract"), new_secret()
        with transaction(runtime.sessions) as session:
            row = webhooks.create(
                session=session,
                url=url,
                secret=secret,
                categories=[],
                description="contract",
                now=utcnow(),
            )
        self.endpoint = row.id
        self.receiver.trust(url, secret)

    def respond(self, mode: str) -> None:
        self.receiver.default = Answer(MODES[mode])

    def received(self) -> int:
        return len(self.receiver.deliveries)

    def target_active(self, runtime, recipient: str) -> bool:
        with runtime.sessions() as session:
            deactivated = session.execute(
                select(WebhookEndpoint.deactivated_at).where(WebhookEndpoint.id == self.endpoint)
            ).one_or_none()
        return deactivated is not None and deactivated[0] is None


@pytest.fixture
def webhook_harness(webhook_receiver) -> WebhookHarness:
    return WebhookHarness(webhook_receiver)
