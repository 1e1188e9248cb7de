"""Email over SMTP (aiosmtplib), rendered from Jinja2 templates.

* One SMTP session per worker process, reused across sends and tasks, re-opened after an
  error; a second relay takes over while the first keeps failing to connect.
* multipart/alternative: plain text and HTML, from ``templates/<category>.{txt,html}``
  when present, else ``notification.{txt,html}``; HTML is autoescaped. A notification
  sent by template brings its rendered subject, text and HTML (``template.html`` puts
  that HTML in the layout). The layout's fixed words follow the recipient's locale
  (``templates/strings.toml``).
* The message bytes are written by :mod:`.mime` (7-bit: encoded words, quoted-printable
  or base64), not by ``EmailMessage``, whose build + flatten cost more CPU than the SMTP
  exchange (docs/benchmarks/code.md).
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
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parseaddr
from importlib import resources
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
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
from clarion.channels.email import mime
from clarion.channels.links import unsubscribe_token
from clarion.db.models import Subscriber
from clarion.locales import locale_chain
from clarion.settings import Settings, SmtpSettings

# The layout's fixed words by language (footer, unsubscribe, the "Open" button).
WORDS: dict[str, dict[str, str]] = tomllib.loads(
    resources.files(__package__).joinpath("templates", "strings.toml").read_text("utf-8")
)
# Replies that mean "this relay is unusable right now", not "this message is unwelcome".
RELAY_DOWN = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One rendered email: its Message-ID, the envelope recipient and the message bytes."""

    message_id: str
    recipient: str
    data: bytes
    # The address is not ASCII (RFC 6531): the relay must offer SMTPUTF8.
    utf8: bool = False


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
        if user and not (smtp.tls or smtp.starttls or smtp.allow_plaintext_auth):
            raise ChannelConfigError(
                f"CLARION_SMTP_{who}USERNAME is set but neither CLARION_SMTP_TLS nor "
                "CLARION_SMTP_STARTTLS: the password would cross the network in clear. "
                "Turn one on, or set CLARION_SMTP_ALLOW_PLAINTEXT_AUTH=true for a relay "
                "on a trusted link."
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
            auto_reload=False,  # the templates ship with the package: no stat per render
        )
        # Per process: the header, the templates of each category and the layout's words
        # do not change between emails (a failed template lookup is not cached by Jinja).
        try:
            self._from = mime.address("From", self.smtp.sender_name, self.sender)
        except mime.AddressError as exc:
            raise ChannelConfigError(f"CLARION_SMTP_FROM: {exc}") from None
        self._layouts = functools.lru_cache(maxsize=1024)(self._select_layouts)
        self._words = functools.lru_cache(maxsize=1024)(self._locale_words)
        self._loop: LoopThread | None = None
        self._loop_lock = threading.Lock()
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
    def render(self, message: Message, target: dict[str, Any]) -> Outgoing:
        recipient = message.recipient
        if not recipient.get("email"):
            raise PermanentChannelError("the subscriber no longer has an email address")
        context = self._context(message)
        category = message.notification["category"]
        text, html = self._layouts(category, context["content_html"] is not None)
        parts = (("plain", text.render(context)), ("html", html.render(context)))
        message_id = f"<{message.delivery_id}@{self.domain}>"
        # From the delivery id: "=_" keeps it out of any encoded body (see mime.alternative).
        data = mime.alternative(
            self._head(message, context, message_id), parts, f"=_{message.delivery_id.hex}"
        )
        email = recipient["email"]
        return Outgoing(message_id, email, data.encode(), utf8=not email.isascii())

    def _context(self, message: Message) -> dict[str, Any]:
        """What the layout templates see (user content is escaped by their autoescape)."""
        n, recipient = message.notification, message.recipient
        unsubscribe = f"{self.settings.base_url}/v1/unsubscribe?token=" + unsubscribe_token(
            self.settings, recipient["id"], n["category"], self.key
        )
        content = message.rendered()  # sent by template: its subject, html and text
        lang, words = self._words(recipient.get("locale"), n["category"])
        return {
            "notification": n,
            "recipient": recipient,
            "subject": (content or {}).get("subject") or n["title"],
            "body": content["text"] if content else n.get("body"),
            # Rendered by the template sandbox with autoescape on: escaped already.
            "content_html": Markup(content["html"]) if content and content["html"] else None,  # noqa: S704
            "lang": lang,
            "words": words,
            "url": _safe_url(n.get("url")),
            "unsubscribe_url": unsubscribe,
        }

    def _head(self, message: Message, context: dict[str, Any], message_id: str) -> list[str]:
        """The header lines, each ending CRLF."""
        recipient = message.recipient
        try:
            to = mime.address("To", recipient.get("name") or "", recipient["email"])
        except mime.AddressError as exc:
            raise PermanentChannelError(str(exc)) from None
        subject = context["subject"].replace("\r", " ").replace("\n", " ")
        return [
            self._from,
            to,
            mime.header("Subject", subject),
            f"Date: {formatdate()}\r\n",
            f"Message-ID: {message_id}\r\n",
            # Plain, on one line (under 998 characters): mail clients read it as a URL.
            f"List-Unsubscribe: <{context['unsubscribe_url']}>\r\n",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            f"X-Clarion-Notification: {message.notification['id']}\r\n",
        ]

    def _select_layouts(self, category: str, by_template: bool) -> tuple[Template, Template]:
        """The (text, HTML) templates of a category: ``<category>.*`` when present, else
        ``notification.*``; a notification sent by template puts its HTML in
        ``template.html``."""
        names = [f"{category}.{{}}", "notification.{}"]
        text = self.templates.select_template([t.format("txt") for t in names])
        html_names = ["template.html"] if by_template else names
        return text, self.templates.select_template([t.format("html") for t in html_names])

    def _locale_words(self, locale: str | None, category: str) -> tuple[str, Mapping[str, str]]:
        """The layout's fixed words in the recipient's language (ru-RU → ru → the
        default locale → en), with the category filled in."""
        for tag in [*locale_chain(locale, self.settings.default_locale), "en"]:
            if tag in WORDS:
                words = {k: v.replace("{category}", category) for k, v in WORDS[tag].items()}
                return tag, MappingProxyType(words)  # cached: shared by every email
        raise ChannelConfigError("templates/strings.toml has no English words")

    # -- send --------------------------------------------------------------------------
    def send(self, payload: Outgoing, target: dict[str, Any]) -> str:
        if self._loop is None:
            with self._loop_lock:  # a threads pool's first sends must share one loop
                if self._loop is None:
                    self._loop = LoopThread("clarion-smtp")
        self._loop.run(self._send(payload), timeout=self.send_timeout)
        return payload.message_id

    async def _send(self, email: Outgoing) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one session: the thread pool's sends take turns
            order = self._order()
            for i, relay in enumerate(order):
                try:
                    client = await self._session(relay)
                    await client.sendmail(
                        self.sender,
                        [email.recipient],
                        email.data,
                        mail_options=["SMTPUTF8"] if email.utf8 else None,
                    )
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
