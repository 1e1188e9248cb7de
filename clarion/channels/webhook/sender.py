"""Signed webhooks: one POST per notification to each endpoint of its category, and one per
click on one of its actions (``notification.action``, clarion.core.actions).

Requests follow Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id`` is
the delivery id, the same on every retry, so a receiver drops duplicates by it;
``webhook-signature`` is ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed
by the endpoint's ``whsec_`` secret, so any Standard Webhooks library verifies it.

Requests go through the channels' one HTTP client (:mod:`clarion.channels.httpclient`):
only where :class:`~clarion.channels.outbound.OutboundPolicy` allows (checked at connect
time), no redirects, nothing from the environment, ``CLARION_OUTBOUND_PROXY`` when set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session

from clarion.channels import (
    Channel,
    Message,
    PermanentChannelError,
    RetryableChannelError,
    TargetGoneError,
    retry_after,
)
from clarion.channels.httpclient import TRANSPORT_ERRORS, Answer, OutboundHttp, UnusableURL
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy, failure, status_text
from clarion.db import targets, webhooks
from clarion.db.models import WebhookEndpoint
from clarion.ids import utcnow
from clarion.settings import Settings
from clarion.version import __version__

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
EVENT_TYPE = "notification.created"
# A delivery whose event is "action:<id>": the recipient clicked that action.
ACTION_EVENT_TYPE, ACTION_PREFIX = "notification.action", "action:"
USER_AGENT = f"Clarion-Webhooks/{__version__}"
RETRYABLE_STATUS = frozenset({408, 429})
# The longest a connection may take to open; the read timeout is CLARION_WEBHOOK_TIMEOUT_SECONDS.
CONNECT_TIMEOUT = 5.0


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
        self.timeout = settings.webhook_timeout_seconds  # for each read of the answer
        connect = min(CONNECT_TIMEOUT, self.timeout)
        self.send_timeout = connect + self.timeout
        # Where sends may connect (public internet, CLARION_OUTBOUND_*).
        self.policy = OutboundPolicy.from_settings(settings)
        self._http = OutboundHttp(self.policy, connect_timeout=connect, read_timeout=self.timeout)

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
            answer = self._http.post(target["url"], payload.body, payload.headers)
        except AddressNotAllowed as exc:  # an endpoint that is (now) internal: never call it
            raise PermanentChannelError(f"connect: {exc}") from None
        except UnusableURL as exc:
            raise PermanentChannelError(f"the endpoint URL is not usable: {exc}") from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise RetryableChannelError("connect: timed out") from None
            raise RetryableChannelError(f"no answer within {self.timeout:g} s") from None
        except TRANSPORT_ERRORS as exc:
            # The cause's type or strerror only: exception texts can quote the answer.
            raise RetryableChannelError(failure(exc)) from None
        return _classify(answer)

    def close(self) -> None:
        self._http.close()


def _classify(response: Answer) -> str:
    """The provider reference of an accepted answer, or the error of a refused one (its
    status, never its body: errors are readable by producers through the API)."""
    status = response.status
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
