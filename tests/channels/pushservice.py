"""A real web push service for the tests, on 127.0.0.1, written from the RFCs.

Like Mozilla's autopush or FCM, it checks every request before accepting it: the VAPID
token (RFC 8292: ES256 signature against the key in ``k``, ``aud`` = this origin, ``exp``
in the future and at most 24 hours ahead, ``sub`` present, ``k`` = the application server
key the browser subscribed with), a TTL header, and an aes128gcm body (RFC 8291) of at
most 4096 bytes that it decrypts with the subscription's private key and auth secret, as
the browser would. Answers can be scripted per subscription.

It shares no code with ``clarion.channels.push``: its keys come from ``cryptography``,
its token check from ``pyjwt``, its decryption from ``http_ece``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from clarion.db import push, subscribers
from clarion.db.models import PushSubscription
from clarion.db.session import transaction
from clarion.ids import utcnow

MAX_BODY = 4096  # RFC 8030 §7.2: push services must accept at least this; ours: at most
MAX_EXP_AHEAD = 24 * 3600  # RFC 8292 §2
SUBJECT = "mailto:ops@clarion.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def vapid_pair() -> tuple[str, str]:
    """(base64url raw private scalar, base64url public point), made with cryptography."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64(key.private_numbers().private_value.to_bytes(32, "big")), b64(point(key))


@dataclass
class Browser:
    """What a browser holds after ``pushManager.subscribe()``: its keys and endpoint."""

    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        return b64(point(self.private_key))

    @property
    def auth(self) -> str:
        return b64(self.auth_secret)

    def json(self, **extra: Any) -> dict[str, Any]:
        """``PushSubscription.toJSON()``, as posted to ``/v1/me/push-subscriptions``."""
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
            **extra,
        }


@dataclass
class Push:
    """One push the service accepted: the decrypted payload and what came with it."""

    payload: dict[str, Any]
    headers: dict[str, str]  # lower-case names: ttl, urgency, topic, authorization, ...
    claims: dict[str, Any]
    size: int  # of the encrypted body


@dataclass
class PushService:
    host: str = "127.0.0.1"
    port: int = 0
    vapid_private: str = ""
    vapid_public: str = ""
    default: tuple[int, dict[str, str]] = (201, {})
    browsers: dict[str, Browser] = field(default_factory=dict)
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    pushes: dict[str, list[Push]] = field(default_factory=dict)
    # Every request with its answer: (token, status, reason).
    log: list[tuple[str, int, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.vapid_private, self.vapid_public = vapid_pair()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def settings(self) -> dict[str, Any]:
        """Settings overrides pointing Clarion's push channel at this service."""
        return {
            "vapid": {
                "private_key": self.vapid_private,
                "public_key": self.vapid_public,
                "subject": SUBJECT,
            },
            "push_allow_http_endpoints": True,
            "outbound_allowed_networks": [f"{self.host}/32"],  # a local service
        }

    def reset(self) -> None:
        with self.lock:
            self.default = (201, {})
            for store in (self.browsers, self.scripts, self.pushes):
                store.clear()
            self.log.clear()
            self.tokens.clear()

    # -- the browser side --------------------------------------------------------------------
    def subscribe(self) -> Browser:
        """A new browser subscription: a P-256 key pair, a 16-byte auth secret, an endpoint."""
        token = secrets.token_urlsafe(16)
        browser = Browser(
            token=token,
            endpoint=f"{self.origin}/push/{token}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=os.urandom(16),
        )
        with self.lock:
            self.browsers[token] = browser
            self.pushes[token] = []
        return browser

    def script(self, token: str, answers: list[int | tuple[int, dict[str, str]]]) -> None:
        """The next answers for this subscription, e.g. ``[(429, {"Retry-After": "1"}), 201]``;
        after them, the default answer."""
        with self.lock:
            self.scripts[token] = [a if isinstance(a, tuple) else (a, {}) for a in answers]

    def received(self, browser: Browser | str) -> list[Push]:
        token = browser if isinstance(browser, str) else browser.token
        with self.lock:
            return list(self.pushes.get(token, []))

    def accepted(self) -> int:
        with self.lock:
            return sum(len(p) for p in self.pushes.values())

    # -- the push service side ---------------------------------------------------------------
    def verify(self, authorization: str) -> tuple[int, str, dict[str, Any]]:
        """(0, "", claims) for a valid VAPID token; else the status and why."""
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return 401, "no vapid authorization", {}
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t"), parts.get("k")
        if not token or not key:
            return 401, "t and k are required", {}
        if key.rstrip("=") != self.vapid_public:
            return 403, "k is not the key this subscription was made with", {}
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            return 401, f"bad token: {exc}", {}
        if claims["exp"] > time.time() + MAX_EXP_AHEAD:
            return 401, "exp is more than 24 hours ahead", {}
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return 401, "sub is not a mailto: or https: URI", {}
        with self.lock:
            self.tokens.add(token)
        return 0, "", claims

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        token = path.removeprefix("/push/")
        browser = self.browsers.get(token) if path.startswith("/push/") else None
        status, reason, claims = self.verify(headers.get("authorization", ""))
        if not status and browser is None:
            status, reason = 404, "no such subscription"
        elif not status and "ttl" not in headers:
            status, reason = 400, "TTL header is required"
        elif not status and len(body) > MAX_BODY:
            status, reason = 413, f"payload is {len(body)} bytes"
        elif not status and headers.get("content-encoding") != "aes128gcm":
            status, reason = 415, "content-encoding must be aes128gcm"
        payload = None
        if not status:
            try:
                plain = http_ece.decrypt(
                    body,
                    private_key=browser.private_key,
                    auth_secret=browser.auth_secret,
                    version="aes128gcm",
                )
                payload = json.loads(plain)
            except (http_ece.ECEException, ValueError) as exc:
                status, reason = 400, f"cannot decrypt: {exc}"
        if not status:
            with self.lock:
                script = self.scripts.get(token)
                status, extra = script.pop(0) if script else self.default
                if 200 <= status < 300:
                    self.pushes[token].append(Push(payload, headers, claims, len(body)))
                    extra = {"Location": f"{self.origin}/message/{uuid.uuid4()}", **extra}
                reason = "scripted" if status >= 300 else "accepted"
        else:
            extra = {}
        with self.lock:
            self.log.append((token, status, reason))
        return status, extra, (reason.encode() if status >= 300 else b"")


def _handler(service: PushService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as push services do

        def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, data = service.handle(self.path, headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def _push_server():
    service = PushService()
    server = ThreadingHTTPServer((service.host, 0), _handler(service))
    server.daemon_threads = True
    service.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="push-service", daemon=True)
    thread.start()
    yield service
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def push_service(_push_server: PushService) -> PushService:
    """The running push service, emptied for this test (its VAPID pair stays)."""
    _push_server.reset()
    return _push_server


# -- the contract harness (tests/channels/__init__.py) ---------------------------------------
MODES = {"ok": 201, "transient": 503, "permanent": 400, "gone": 410}


class PushHarness:
    """The web push channel against the local push service; one browser per recipient."""

    key = "push"
    gone = True

    def __init__(self, service: PushService) -> None:
        self.service = service
        self.settings = service.settings
        other_public = vapid_pair()[1]
        vapid = service.settings["vapid"]
        self.bad_settings = [
            {**service.settings, "vapid": {**vapid, "private_key": "not-a-key"}},
            {**service.settings, "vapid": {**vapid, "public_key": other_public}},
            {**service.settings, "vapid": {**vapid, "subject": "ops@clarion.test"}},
        ]

    def add_target(self, runtime, recipient: str) -> Browser:
        browser = self.service.subscribe()
        now = utcnow()
        with transaction(runtime.sessions) as session:
            subscribers.ensure(session=session, ids=[recipient], now=now)
            push.register(
                session=session,
                subscriber_id=recipient,
                endpoint=browser.endpoint,
                p256dh=browser.p256dh,
                auth=browser.auth,
                user_agent="contract",
                now=now,
            )
        return browser

    def respond(self, mode: str) -> None:
        with self.service.lock:
            self.service.scripts.clear()
            self.service.default = (MODES[mode], {})

    def received(self) -> int:
        return self.service.accepted()

    def target_active(self, runtime, recipient: str) -> bool:
        with runtime.sessions() as session:
            return bool(
                session.scalar(
                    select(PushSubscription.id).where(
                        PushSubscription.subscriber_id == recipient,
                        PushSubscription.deactivated_at.is_(None),
                    )
                )
            )


@pytest.fixture
def push_harness(push_service: PushService) -> PushHarness:
    return PushHarness(push_service)
