"""A real SMTP server (aiosmtpd) for the email tests, with STARTTLS, AUTH and scripted replies."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from clarion.db import subscribers
from clarion.db.models import Subscriber
from clarion.db.session import transaction
from clarion.ids import utcnow
from tests.e2e.procs import free_port

SENDER = "noreply@clarion.test"
USER, PASSWORD = "clarion", "relay-password"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage
    tls: bool
    authenticated: bool
    peer: tuple  # the client's (host, port): one per SMTP session
    raw: bytes = b""  # the DATA as received


@dataclass
class Handler:
    """Stores accepted mail; ``replies`` scripts the next DATA answers ("250" = accept)."""

    messages: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    # Every DATA answer from now on, until changed ("ok" answers 250).
    steady: str = "ok"
    # Called with the number of MAIL commands seen so far (the kill hook of the e2e test).
    on_mail: object = None
    mails: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        with self.lock:
            self.mails += 1
            seen = self.mails
        if self.on_mail:
            self.on_mail(seen)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            reply = self.replies.pop(0) if self.replies else self.steady
        if reply != "ok":
            return reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message,
                    tls=session.ssl is not None,
                    authenticated=bool(session.authenticated),
                    peer=tuple(session.peer),
                    raw=envelope.original_content or envelope.content,
                )
            )
        return "250 Message accepted"


class SmtpServer:
    """One aiosmtpd server on a fixed port, which tests can stop and start again."""

    def __init__(self, tmp: Path, *, starttls: bool = False, plain_auth: bool = False) -> None:
        self.port = free_port()
        self.handler = Handler()
        self.starttls = starttls
        # Authentication over a connection left in clear (what clients must opt into).
        self.plain_auth = plain_auth
        self.tls_context = None
        if starttls:
            cert, key = self_signed(tmp)
            self.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_context.load_cert_chain(cert, key)
        self.controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (USER, PASSWORD)
        return AuthResult(success=ok)

    def start(self) -> SmtpServer:
        extra = {}
        if self.starttls:
            extra = {
                "tls_context": self.tls_context,
                "require_starttls": True,
                "authenticator": self._authenticate,
                "auth_require_tls": True,
                "auth_required": True,
            }
        elif self.plain_auth:
            extra = {
                "authenticator": self._authenticate,
                "auth_require_tls": False,
                "auth_required": True,
            }
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **extra
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def settings(self, **smtp) -> dict:
        values = {"host": "127.0.0.1", "port": self.port, "sender": SENDER, "timeout": 5}
        if self.starttls:
            values.update(starttls=True, username=USER, password=PASSWORD, validate_certs=False)
        return {"smtp": {**values, **smtp}}


@pytest.fixture
def smtp_server(tmp_path):
    server = SmtpServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_tls_server(tmp_path):
    server = SmtpServer(tmp_path, starttls=True).start()
    yield server
    server.stop()


def give_email(
    runtime, recipient: str, address: str | None = None, name: str | None = None
) -> None:
    with transaction(runtime.sessions) as session:
        subscribers.upsert(
            session=session,
            id=recipient,
            profile={
                "email": address or f"{recipient}@example.com",
                "name": name or recipient.title(),
            },
            now=utcnow(),
        )


class EmailHarness:
    key = "email"
    gone = False  # SMTP has no "this address is gone" distinct from a permanent 5xx
    bad_settings = [
        {"smtp": {"host": "127.0.0.1", "sender": "not an address"}},
        {"smtp": {"host": "127.0.0.1", "sender": SENDER, "tls": True, "starttls": True}},
        {"smtp": {"host": "127.0.0.1", "sender": SENDER, "username": "only-a-user"}},
        # Credentials over a connection that is neither TLS nor STARTTLS.
        {"smtp": {"host": "127.0.0.1", "sender": SENDER, "username": "u", "password": "p"}},
    ]
    REPLIES = {"ok": "ok", "transient": "451 4.3.0 Try again later", "permanent": "550 5.1.1 No"}

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.settings = server.settings()

    def add_target(self, runtime, recipient: str) -> None:
        give_email(runtime, recipient)

    def respond(self, mode: str) -> None:
        self.server.handler.steady = self.REPLIES[mode]

    def received(self) -> int:
        return len(self.server.messages)

    def target_active(self, runtime, recipient: str) -> bool:
        with runtime.sessions() as s:
            return s.scalar(select(Subscriber.email).where(Subscriber.id == recipient)) is not None


@pytest.fixture
def email_harness(smtp_server) -> EmailHarness:
    return EmailHarness(smtp_server)
