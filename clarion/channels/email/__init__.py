"""Email over SMTP (aiosmtplib), rendered from Jinja2 templates.

* One SMTP session per worker process, reused across sends and tasks, re-opened after an
  error; a second relay takes over while the first keeps failing to connect.
* multipart/alternative: plain text and HTML, from ``templates/<category>.{txt,html}``
  when present, else ``notification.{txt,html}``; HTML is autoescaped. A notification
  sent by template brings its rendered subject, text and HTML (``template.html`` puts
  that HTML in the layout). The layout's fixed words follow the recipient's locale
  (``templates/strings.toml``).
* ``Message-ID`` is derived from the delivery id, so a re-send after a crash carries the
  same id; it is the delivery's provider reference.
* ``List-Unsubscribe`` + ``List-Unsubscribe-Post`` (RFC 8058): a signed one-click link that
  turns this category's email off for this subscriber.
* SMTP 5xx → permanent (dead letter with the reply); 4xx and connection errors → retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
import tomllib
from dataclasses import dataclass
from email import policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from clarion.channels import (
    Channel,
    ChannelConfigError,
    ChannelNotConfigured,
    Message,
    PermanentChannelError,
    RetryableChannelError,
)
from clarion.channels.aio import LoopThread
from clarion.core.auth import unsubscribe_token
from clarion.core.templates import locale_chain
from clarion.db.models import Subscriber
from clarion.settings import Settings, SmtpSettings


# Long headers (the unsubscribe URL) must stay plain: the default policy would RFC 2047-
# encode a long unbreakable value, which mail clients do not read as a URL.
class _CachedHeaders(HeaderRegistry):
    """The standard header registry builds a new class with type() for every header set,
    32 times per email; the classes depend only on the header name, so build each once."""

    @functools.cache  # noqa: B019 - one registry per process, kept for its lifetime
    def __getitem__(self, name: str):
        return super().__getitem__(name)


POLICY = policy.SMTP.clone(max_line_length=998, header_factory=_CachedHeaders())
# The layout's fixed words by language (footer, unsubscribe, the "Open" button).
WORDS: dict[str, dict[str, str]] = tomllib.loads(
    resources.files(__name__).joinpath("templates", "strings.toml").read_text("utf-8")
)
# Replies that mean "this relay is unusable right now", not "this message is unwelcome".
RELAY_DOWN = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)


@dataclass
class Relay:
    name: str
    host: str
    port: int | None
    username: str | None
    password: str | None
    failures: int = 0


def _relays(smtp: SmtpSettings) -> list[Relay]:
    secret = smtp.password.get_secret_value() if smtp.password else None
    relays = [Relay("primary", smtp.host or "", smtp.port, smtp.username, secret)]
    if smtp.fallback_host:
        fallback_secret = (
            smtp.fallback_password.get_secret_value() if smtp.fallback_password else None
        )
        relays.append(
            Relay(
                "fallback",
                smtp.fallback_host,
                smtp.fallback_port or smtp.port,
                smtp.fallback_username,
                fallback_secret,
            )
        )
    return relays


def _check(smtp: SmtpSettings) -> None:
    if not smtp.host:
        raise ChannelNotConfigured(
            "email is not configured: set CLARION_SMTP_HOST and CLARION_SMTP_FROM"
        )
    if not smtp.sender or "@" not in parseaddr(smtp.sender)[1]:
        raise ChannelConfigError(f"CLARION_SMTP_FROM must be an email address, got {smtp.sender!r}")
    if smtp.tls and smtp.starttls:
        raise ChannelConfigError("CLARION_SMTP_TLS and CLARION_SMTP_STARTTLS exclude each other")
    for who, user, password in (
        ("", smtp.username, smtp.password),
        ("FALLBACK_", smtp.fallback_username, smtp.fallback_password),
    ):
        if bool(user) != bool(password):
            raise ChannelConfigError(
                f"CLARION_SMTP_{who}USERNAME and CLARION_SMTP_{who}PASSWORD go together"
            )


def _safe_url(value: str | None) -> str | None:
    """Only http(s) links become clickable: a ``javascript:`` URL must not reach an inbox."""
    if value and urlsplit(value).scheme in ("http", "https"):
        return value
    return None


class EmailChannel(Channel):
    """Email through the configured SMTP relay (``CLARION_SMTP_*``)."""

    key = "email"
    no_target = "no email address"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.smtp = settings.smtp
        _check(self.smtp)
        self.sender = parseaddr(self.smtp.sender or "")[1]
        self.domain = self.sender.rsplit("@", 1)[1]
        self.relays = _relays(self.smtp)
        # Connect + TLS + auth + one transaction, each bounded by the SMTP timeout.
        self.send_timeout = self.smtp.timeout * 4 + 1
        self.templates = Environment(
            loader=PackageLoader("clarion.channels.email", "templates"),
            autoescape=select_autoescape(["html"], default_for_string=False),
            undefined=StrictUndefined,
        )
        self._loop: LoopThread | None = None
        self._client: aiosmtplib.SMTP | None = None
        self._client_relay: Relay | None = None
        self._lock: asyncio.Lock | None = None
        # While the primary keeps failing: use the fallback until this monotonic time.
        self._failover_until = 0.0

    # -- addressing --------------------------------------------------------------------
    def targets(
        self, *, session: Session, recipients: list[str], category: str
    ) -> dict[str, list[str]]:
        with_email = session.scalars(
            select(Subscriber.id).where(
                Subscriber.id.in_(recipients), Subscriber.email.is_not(None)
            )
        )
        return {r: [""] for r in with_email}

    # -- render ------------------------------------------------------------------------
    def render(self, message: Message, target: dict[str, Any]) -> EmailMessage:
        recipient = message.recipient
        if not recipient.get("email"):
            raise PermanentChannelError("the subscriber no longer has an email address")
        n = message.notification
        unsubscribe = f"{self.settings.base_url}/v1/unsubscribe?token=" + unsubscribe_token(
            self.settings, recipient["id"], n["category"], self.key
        )
        content = message.rendered()  # sent by template: its subject, html and text
        subject = (content or {}).get("subject") or n["title"]
        lang, words = self._words(recipient.get("locale"), n["category"])
        context = {
            "notification": n,
            "recipient": recipient,
            "subject": subject,
            "body": content["text"] if content else n.get("body"),
            # Rendered by the template sandbox with autoescape on: escaped already.
            "content_html": Markup(content["html"]) if content and content["html"] else None,  # noqa: S704
            "lang": lang,
            "words": words,
            "url": _safe_url(n.get("url")),
            "unsubscribe_url": unsubscribe,
        }
        names = [f"{n['category']}.{{}}", "notification.{}"]
        text = self.templates.select_template([t.format("txt") for t in names]).render(context)
        html_names = ["template.html"] if context["content_html"] is not None else names
        html = self.templates.select_template([t.format("html") for t in html_names])
        html = html.render(context)
        email = EmailMessage(policy=POLICY)
        email["From"] = formataddr((self.smtp.sender_name, self.sender))
        email["To"] = formataddr((recipient.get("name") or "", recipient["email"]))
        email["Subject"] = subject.replace("\r", " ").replace("\n", " ")
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = f"<{message.delivery_id}@{self.domain}>"
        email["List-Unsubscribe"] = f"<{unsubscribe}>"
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email["X-Clarion-Notification"] = n["id"]
        email.set_content(text)
        email.add_alternative(html, subtype="html")
        return email

    def _words(self, locale: str | None, category: str) -> tuple[str, dict[str, str]]:
        """The layout's fixed words in the recipient's language (ru-RU → ru → the
        default locale → en), with the category filled in."""
        for tag in [*locale_chain(locale, self.settings.default_locale), "en"]:
            if tag in WORDS:
                return tag, {k: v.replace("{category}", category) for k, v in WORDS[tag].items()}
        raise ChannelConfigError("templates/strings.toml has no English words")

    # -- send --------------------------------------------------------------------------
    def send(self, payload: EmailMessage, target: dict[str, Any]) -> str:
        if self._loop is None:
            self._loop = LoopThread("clarion-smtp")
        self._loop.run(self._send(payload), timeout=self.send_timeout)
        return payload["Message-ID"]

    async def _send(self, email: EmailMessage) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one session: the thread pool's sends take turns
            order = self._order()
            for i, relay in enumerate(order):
                try:
                    client = await self._session(relay)
                    await client.send_message(email)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    refused = exc.recipients[0]
                    raise self._reply_error(refused.code, refused.message) from None
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code == 421:  # the relay is closing the session: open a new one
                        await self._drop()
                    raise self._reply_error(exc.code, exc.message) from None
                except (*RELAY_DOWN, TimeoutError) as exc:
                    await self._drop()
                    if not self._failed(relay) or i == len(order) - 1:
                        raise RetryableChannelError(f"SMTP relay {relay.name}: {exc!r}") from None
                    continue  # failing over: the next relay, within this send
                relay.failures = 0
                return

    def _order(self) -> list[Relay]:
        if len(self.relays) > 1 and time.monotonic() < self._failover_until:
            return [self.relays[1], self.relays[0]]
        return list(self.relays)

    def _failed(self, relay: Relay) -> bool:
        """Count a connection failure; True while failing over (try the other relay)."""
        relay.failures += 1
        primary = self.relays[0]
        if relay is primary and relay.failures >= self.smtp.failover_after:
            self._failover_until = time.monotonic() + self.smtp.failover_seconds
        return len(self.relays) > 1 and time.monotonic() < self._failover_until

    @staticmethod
    def _reply_error(code: int, text: str) -> Exception:
        reply = f"SMTP {code} {text}".strip()
        if code >= 500:
            return PermanentChannelError(reply)
        return RetryableChannelError(reply)

    async def _session(self, relay: Relay) -> aiosmtplib.SMTP:
        client = self._client
        if client is not None and client.is_connected and self._client_relay is relay:
            return client
        await self._drop()
        tls_context = None
        if not self.smtp.validate_certs:
            tls_context = ssl.create_default_context()
            tls_context.check_hostname, tls_context.verify_mode = False, ssl.CERT_NONE
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            use_tls=self.smtp.tls,
            start_tls=self.smtp.starttls,
            validate_certs=self.smtp.validate_certs,
            tls_context=tls_context,
            timeout=self.smtp.timeout,
        )
        await client.connect()
        if relay.username and relay.password:
            await client.login(relay.username, relay.password)
        self._client, self._client_relay = client, relay
        return client

    async def _drop(self) -> None:
        client, self._client, self._client_relay = self._client, None, None
        if client is not None:
            # Closing a broken session must not mask the error that broke it.
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        if self._loop is None:
            return

        async def quit_session() -> None:
            if self._client is not None and self._client.is_connected:
                with contextlib.suppress(Exception):  # best effort at shutdown
                    await self._client.quit()
            await self._drop()

        try:
            self._loop.run(quit_session(), timeout=self.smtp.timeout)
        finally:
            self._loop.close()
            self._loop = None
