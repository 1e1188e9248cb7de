"""Signed webhooks: one POST per notification to each endpoint of its category, and one per
click on one of its actions (``notification.action``, clarion.core.actions).

Requests follow Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id`` is
the delivery id, the same on every retry, so a receiver drops duplicates by it;
``webhook-signature`` is ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed
by the endpoint's ``whsec_`` secret, so any Standard Webhooks library verifies it.

Requests go only where :class:`~clarion.channels.outbound.OutboundPolicy` allows: the
session's adapter connects to the addresses the policy checked (urllib3's ``_new_conn``
is the connect hook), reads no ``.netrc`` and no proxy from the environment, and uses
``CLARION_OUTBOUND_PROXY`` when it is set.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy.orm import Session
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from clarion import __version__
from clarion.channels import (
    Channel,
    Message,
    PermanentChannelError,
    RetryableChannelError,
    TargetGoneError,
    retry_after,
)
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy, failure, status_text
from clarion.db import targets, webhooks
from clarion.db.models import WebhookEndpoint
from clarion.ids import utcnow
from clarion.settings import Settings

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
EVENT_TYPE = "notification.created"
# A delivery whose event is "action:<id>": the recipient clicked that action.
ACTION_EVENT_TYPE, ACTION_PREFIX = "notification.action", "action:"
USER_AGENT = f"Clarion-Webhooks/{__version__}"
# Answers are read (and dropped, so the connection can be reused) up to this many bytes: a
# receiver cannot make a worker buffer a huge body. Nothing of a body is ever stored.
MAX_ANSWER_BYTES = 4096
RETRYABLE_STATUS = frozenset({408, 429})
UNUSABLE_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
)


@dataclass(frozen=True)
class WebhookRequest:
    """A rendered webhook: the exact body bytes that were signed, and the headers."""

    body: bytes
    headers: dict[str, str]


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise PermanentChannelError("the endpoint's secret is not a whsec_ base64 secret")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256(id.timestamp.body)>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _drain(response: requests.Response) -> None:
    """Read a short answer to its end, so its keep-alive connection can serve the next
    send; what it says is not kept."""
    with contextlib.suppress(requests.RequestException, OSError, ValueError):
        response.raw.read(MAX_ANSWER_BYTES, decode_content=False)


class _CheckedConnect:
    """urllib3's connect hook: connect only to the addresses the policy just checked."""

    policy: OutboundPolicy  # set on the classes :func:`checked_session` makes

    def _new_conn(self):  # the signature and errors of urllib3's HTTPConnection._new_conn
        try:
            return self.policy.create_connection(
                (self._dns_host, self.port), self.timeout, source_address=self.source_address
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connect timed out ({self.timeout})") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"connect: {failure(exc)}") from exc


class _CheckedAdapter(HTTPAdapter):
    """Direct connections through the policy; the proxy's (if set) are requests' own."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool, conn in (
            ("http", HTTPConnectionPool, HTTPConnection),
            ("https", HTTPSConnectionPool, HTTPSConnection),
        ):
            checked = type("Checked" + conn.__name__, (_CheckedConnect, conn), {})
            checked.policy = self.policy
            pools[scheme] = type("Checked" + pool.__name__, (pool,), {"ConnectionCls": checked})
        self.poolmanager.pool_classes_by_scheme = pools


def checked_session(policy: OutboundPolicy) -> requests.Session:
    """A requests session that connects only where ``policy`` allows, ignores the
    environment (``.netrc``, ``*_PROXY``, CA bundle variables) and uses the policy's proxy."""
    session = requests.Session()
    session.trust_env = False
    adapter = _CheckedAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if policy.proxy:
        session.proxies = {"http": policy.proxy, "https": policy.proxy}
    return session


class WebhookChannel(Channel):
    """Signed JSON POSTs to the endpoints registered through ``/v1/webhooks``.

    Always configured: the endpoints are data, not settings. Status mapping: 2xx sent;
    408, 429, 5xx, timeouts and connection errors retried (honouring Retry-After); 410
    deactivates the endpoint; redirects, other 4xx and an address the outbound policy
    refuses are permanent (dead letter). Errors keep the status, never the body.
    """

    key = "webhook"
    no_target = "no webhook endpoint for this category"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.timeout = self.send_timeout = settings.webhook_timeout_seconds
        # Where sends may connect (public internet, CLARION_OUTBOUND_*).
        self.policy = OutboundPolicy.from_settings(settings)
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    # -- addressing --------------------------------------------------------------------
    def targets(
        self, *, session: Session, recipients: list[str], category: str
    ) -> dict[str, list[str]]:
        """Every recipient's notification goes to every active endpoint of the category."""
        ids = [str(i) for i in webhooks.active_for_category(session=session, category=category)]
        return {r: list(ids) for r in recipients} if ids else {}

    def load_targets(self, *, session: Session, ids: set[str]) -> dict[str, dict[str, Any]]:
        rows = targets.active_by_ids(session=session, model=WebhookEndpoint, ids=ids)
        return {str(row.id): {"url": row.url, "secret": row.secret} for row in rows}

    def deactivate(self, *, session: Session, target_id: str, reason: str) -> None:
        targets.deactivate(
            session=session, model=WebhookEndpoint, id=target_id, reason=reason, now=utcnow()
        )

    # -- render and send ---------------------------------------------------------------
    def render(self, message: Message, target: dict[str, Any]) -> WebhookRequest:
        """The signed request; the timestamp is taken now, so a retry is signed afresh."""
        now = time.time()
        data = {**message.notification, "recipient": message.recipient}
        if (content := message.rendered()) is not None:
            data["content"] = content  # sent by template: rendered for webhooks, their locale
        kind = EVENT_TYPE
        if message.event.startswith(ACTION_PREFIX):
            kind, clicked = ACTION_EVENT_TYPE, message.event.removeprefix(ACTION_PREFIX)
            actions = data.get("actions") or ()
            data["action"] = next((a for a in actions if a["id"] == clicked), {"id": clicked})
        event = {
            "type": kind,
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
            "data": data,
        }
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        msg_id, timestamp = str(message.delivery_id), int(now)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(target["secret"], msg_id, timestamp, body),
        }
        return WebhookRequest(body=body, headers=headers)

    def send(self, payload: WebhookRequest, target: dict[str, Any]) -> str:
        try:
            if self.policy.proxy:  # the proxy connects; check where it is asked to go
                _check_origin(self.policy, target["url"])
            response = self._http().post(
                target["url"],
                data=payload.body,
                headers=payload.headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,  # read at most MAX_ANSWER_BYTES of the answer
            )
        except AddressNotAllowed as exc:  # an endpoint that is (now) internal: never call it
            raise PermanentChannelError(f"connect: {exc}") from None
        except (*UNUSABLE_URL, ValueError) as exc:
            raise PermanentChannelError(f"the endpoint URL is not usable: {exc}") from None
        except requests.Timeout:
            raise RetryableChannelError(f"no answer within {self.timeout:g} s") from None
        except (requests.RequestException, OSError) as exc:
            # The cause's type or strerror only: exception texts can quote the answer.
            raise RetryableChannelError(failure(exc)) from None
        with response:
            return _classify(response)

    def _http(self) -> requests.Session:
        # Built on first send, after the worker forked: one keep-alive pool per process.
        with self._lock:
            if self._session is None:
                self._session = checked_session(self.policy)
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def _check_origin(policy: OutboundPolicy, url: str) -> None:
    parts = urlsplit(url)
    policy.resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


def _classify(response: requests.Response) -> str:
    """The provider reference of an accepted answer, or the error of a refused one (its
    status, never its body: errors are readable by producers through the API)."""
    status = response.status_code
    _drain(response)
    if 200 <= status < 300:
        return f"HTTP {status}"
    text = f"HTTP {status_text(status)}"
    if status == 410:
        raise TargetGoneError(f"{text} (endpoint deactivated)")
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableChannelError(
            text, retry_after=retry_after(response.headers.get("retry-after"))
        )
    if 300 <= status < 400:
        raise PermanentChannelError(f"{text}: redirects are not followed")
    raise PermanentChannelError(text)
