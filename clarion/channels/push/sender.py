"""Web push: RFC 8030 delivery, RFC 8291 (aes128gcm) encryption, RFC 8292 (VAPID) identity.

One target per push subscription (a browser or device of the recipient). The payload is
a small JSON document the site's service worker shows as a notification; the push service
only ever sees it encrypted. A 404/410 from the push service means the browser dropped
the subscription: it is deactivated and never addressed again.

The payload is encrypted with ``http_ece`` (the library pywebpush encrypts with), signed
with VAPID (``py_vapid``, a token reused per push service) and POSTed through
:class:`clarion.channels.fastpost.FastPost`: ``http.client`` with the one HTTP client's
behaviour (keep-alive, no redirects, no retries, the SSRF check at connect time), and that
client itself (httpx, :mod:`clarion.channels.httpclient`) through a proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from sqlalchemy.orm import Session

from clarion.channels import (
    Channel,
    ChannelConfigError,
    ChannelNotConfigured,
    Message,
    PermanentChannelError,
    RetryableChannelError,
    TargetGoneError,
    retry_after,
)
from clarion.channels.fastpost import FAST_ERRORS, FastPost
from clarion.channels.httpclient import Answer
from clarion.channels.links import push_action_token
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy, failure, status_text
from clarion.db import push, targets
from clarion.db.models import PushSubscription
from clarion.ids import utcnow
from clarion.settings import Settings

# RFC 8291 §4: push services must accept 4096 bytes of encrypted body, which is the
# aes128gcm header (16 salt + 4 record size + 1 key-id length + 65 key id = 86 bytes) and
# one record (plaintext + 1 delimiter byte + 16 tag bytes): 4096 - 86 - 17 = 3993 bytes.
MAX_PLAINTEXT = 3993
MAX_ENDPOINT = 2048
URGENCY = {"low": "low", "medium": "normal", "high": "high", "critical": "high"}
# RFC 8030 §5.4: a Topic is at most 32 characters of the URL-safe base64 alphabet.
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
ELLIPSIS = "…"
# A VAPID token is signed for 12 hours and reused for 11, so each push service costs one
# signature per 11 hours rather than one per send, and no token is used near its expiry.
VAPID_LIFETIME = 12 * 3600
VAPID_REUSE = 11 * 3600
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 10.0  # seconds
# 408 is the push service timing out on us: as transient as a 5xx.
RETRYABLE_STATUS = frozenset({408, 429})
GONE_STATUS = frozenset({404, 410})
NOT_CONFIGURED = (
    "web push is not configured: set CLARION_VAPID_PRIVATE_KEY, CLARION_VAPID_PUBLIC_KEY "
    "and CLARION_VAPID_SUBJECT (`clarion vapid generate` makes a key pair)"
)


# -- keys and validation (shared with the API) -----------------------------------------
def b64url_decode(value: str) -> bytes:
    """Strict base64url decoding, padding optional; ValueError on anything else."""
    if not B64URL.match(value):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value.rstrip("=")) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def check_p256dh(value: str) -> str:
    """A subscription's public key: an uncompressed P-256 point (65 bytes, 0x04 first)."""
    raw = b64url_decode(value)
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError("p256dh must be a base64url uncompressed P-256 point (65 bytes)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("p256dh is not a point on the P-256 curve") from None
    return value


def check_auth(value: str) -> str:
    """A subscription's authentication secret: 16 bytes."""
    if len(b64url_decode(value)) != 16:
        raise ValueError("auth must be a base64url 16-byte secret")
    return value


def check_endpoint(url: str, *, allow_http: bool) -> str:
    """A push endpoint Clarion will POST to: https (http only when allowed), with a host."""
    if len(url) > MAX_ENDPOINT:
        raise ValueError(f"the endpoint is longer than {MAX_ENDPOINT} characters")
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise ValueError(f"the endpoint must be an {' or '.join(schemes)} URL")
    # User info would make the VAPID audience differ from where the request really goes.
    if not parts.hostname or "@" in parts.netloc:
        raise ValueError("the endpoint must name a host (and no user info)")
    try:
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        raise ValueError("the endpoint's port is not a number from 0 to 65535") from None
    return url


def origin(url: str) -> str:
    """The VAPID audience: the endpoint's origin, default port omitted (RFC 6454)."""
    parts = urlsplit(url)
    port = parts.port
    host = parts.hostname or ""
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM or from the base64url raw 32-byte scalar."""
    text = text.strip().replace("\\n", "\n")  # PEM squeezed into one env line
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text)
            if len(raw) != 32:
                raise ValueError("a raw key is 32 bytes")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM or base64url raw P-256 private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the key is not a P-256 (prime256v1) EC key")
    return key


def public_key_of(key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(raw)


def generate_vapid_keys() -> tuple[str, str]:
    """A new VAPID pair: (base64url raw private scalar, base64url uncompressed public point)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))
    return private, public_key_of(key)


def _check_subject(subject: str | None) -> str:
    if not subject:
        raise ChannelConfigError(
            "CLARION_VAPID_SUBJECT is required with a VAPID key: a mailto: address or an "
            "https: URL where the push service can reach you"
        )
    if subject.startswith("mailto:") and "@" in subject:
        return subject
    if subject.startswith("https://") and urlsplit(subject).hostname:
        return subject
    raise ChannelConfigError(
        f"CLARION_VAPID_SUBJECT must be a mailto: address or an https: URL, not {subject!r}"
    )


# -- payload ----------------------------------------------------------------------------
def _size(data: dict[str, Any]) -> int:
    return len(_encode(data))


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _cut(data: dict[str, Any], name: str) -> str:
    """The longest prefix of data[name] (plus an ellipsis) that fits; "" if none does."""
    text = data[name]
    low, high = 0, len(text)  # low: longest prefix known to fit; high: longest to try
    while low < high:
        mid = (low + high + 1) // 2
        if _size({**data, name: text[:mid] + ELLIPSIS}) <= MAX_PLAINTEXT:
            low = mid
        else:
            high = mid - 1
    candidate = text[:low] + ELLIPSIS
    return candidate if _size({**data, name: candidate}) <= MAX_PLAINTEXT else ""


def fit(data: dict[str, Any]) -> bytes:
    """The payload as JSON of at most MAX_PLAINTEXT bytes: the body gives way first, then
    the actions, the title; actions, a URL or an icon cut short would be broken, so those
    are dropped whole."""
    data = dict(data)
    steps = (("body", True), ("actions", False), ("title", True), ("url", False), ("icon", False))
    for name, cut in steps:
        if _size(data) <= MAX_PLAINTEXT:
            break
        if data.get(name):
            data[name] = _cut(data, name) if cut else None
    return _encode(data)


def push_actions(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions as the service worker hands them to ``showNotification``: ``action``
    and ``title`` (the Notification API's names), plus the ``url`` it opens on a click
    (the API ignores it)."""
    return [{"action": a["id"], "title": a["label"], "url": a.get("url")} for a in actions]


def encrypt(data: bytes, keys: dict[str, str]) -> bytes:
    """RFC 8291 aes128gcm for one subscription, with a new ephemeral key per message."""
    return http_ece.encrypt(
        data,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=b64url_decode(keys["p256dh"]),
        auth_secret=b64url_decode(keys["auth"]),
        version="aes128gcm",
    )


def topic(collapse_key: str | None) -> str | None:
    """The Topic header for a collapse key: the key itself if it is a valid Topic."""
    if not collapse_key:
        return None
    if TOPIC.match(collapse_key):
        return collapse_key
    return b64url_encode(hashlib.sha256(collapse_key.encode()).digest())[:32]


def _outcome(response: Answer) -> str:
    """The provider reference of an accepted push, or the error its status calls for."""
    status = response.status
    if 200 <= status < 300:
        return response.headers.get("Location") or str(status)
    if 300 <= status < 400:
        # Push services answer, they do not redirect: following one would send the
        # encrypted payload and a token for another audience somewhere else.
        raise PermanentChannelError("the push service answered with a redirect")
    # The status only, never the body: the error is readable through the API.
    detail = f"push service answered {status_text(status)}"
    if status in GONE_STATUS:
        raise TargetGoneError(detail)
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableChannelError(
            detail, retry_after=retry_after(response.headers.get("Retry-After"))
        )
    raise PermanentChannelError(detail)


class WebPushChannel(Channel):
    """Web push to each active push subscription of the recipient, signed with VAPID.

    Settings: ``CLARION_VAPID_PRIVATE_KEY`` (absent: push deliveries are skipped),
    ``CLARION_VAPID_PUBLIC_KEY`` (must match it), ``CLARION_VAPID_SUBJECT``,
    ``CLARION_PUSH_TTL_SECONDS``, ``CLARION_PUSH_ICON_URL``.
    """

    key = "push"
    send_timeout = CONNECT_TIMEOUT + READ_TIMEOUT
    no_target = "no push subscription"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        vapid = settings.vapid
        secret = vapid.private_key.get_secret_value().strip() if vapid.private_key else ""
        if not secret:
            raise ChannelNotConfigured(NOT_CONFIGURED)
        try:
            private_key = load_private_key(secret)
        except ValueError as exc:
            raise ChannelConfigError(f"CLARION_VAPID_PRIVATE_KEY: {exc}") from None
        self.public_key = public_key_of(private_key)
        if vapid.public_key and vapid.public_key.strip().rstrip("=") != self.public_key:
            raise ChannelConfigError(
                "CLARION_VAPID_PUBLIC_KEY does not belong to CLARION_VAPID_PRIVATE_KEY "
                f"(its public key is {self.public_key})"
            )
        self.subject = _check_subject(vapid.subject)
        # Our own subject check above replaces py_vapid's narrower one (no https paths).
        self._vapid = Vapid02(private_key, conf={"no-strict": True})
        # Where sends may connect (public internet, CLARION_OUTBOUND_*); shared with the client.
        self.policy = OutboundPolicy.from_settings(settings)
        self._http = FastPost(
            self.policy, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )
        # audience -> (Authorization header, reuse until). Threads racing here both sign,
        # and either token is valid: no lock needed.
        self._tokens: dict[str, tuple[str, float]] = {}

    # -- addressing ------------------------------------------------------------------------
    def targets(
        self, *, session: Session, recipients: list[str], category: str
    ) -> dict[str, list[str]]:
        """Every active subscription of each recipient (all their browsers and devices)."""
        found = push.active_by_subscriber(session=session, subscriber_ids=recipients)
        return {sid: [str(i) for i in ids] for sid, ids in found.items()}

    def load_targets(self, *, session: Session, ids: set[str]) -> dict[str, dict[str, Any]]:
        rows = targets.active_by_ids(session=session, model=PushSubscription, ids=ids)
        return {
            str(r.id): {"endpoint": r.endpoint, "keys": {"p256dh": r.p256dh, "auth": r.auth}}
            for r in rows
        }

    def deactivate(self, *, session: Session, target_id: str, reason: str) -> None:
        targets.deactivate(
            session=session, model=PushSubscription, id=target_id, reason=reason, now=utcnow()
        )

    # -- render and send ---------------------------------------------------------------------
    def render(self, message: Message, target: dict[str, Any]) -> dict[str, Any]:
        """JSON for the service worker (≤ 3993 bytes) and the RFC 8030 headers."""
        n = message.notification
        content = message.rendered()  # sent by template: subject as title, text as body
        shown = {
            "title": (content or {}).get("subject") or n["title"],
            "body": content["text"] if content else n.get("body"),
            "url": n.get("url"),
            "id": n["id"],
            "category": n["category"],
            "severity": n["severity"],
            "icon": self.settings.push_icon_url,
        }
        if n.get("actions"):
            shown["actions"] = push_actions(n["actions"])
        ttl = self.settings.push_ttl_seconds
        # For the service worker: mark this one read, or record a click on one of its
        # actions, without the user's token (clarion.channels.links.push_action_token).
        shown["token"] = push_action_token(
            self.settings, message.recipient["id"], n["id"], timedelta(seconds=ttl)
        )
        body = fit(shown)
        headers = {"TTL": str(ttl), "Urgency": URGENCY.get(n["severity"], "normal")}
        if key := topic(n.get("collapse_key")):
            headers["Topic"] = key
        return {"data": body, "headers": headers, "ttl": ttl}

    def send(self, payload: dict[str, Any], target: dict[str, Any]) -> str:
        """Encrypt for the subscription, POST it with a VAPID token, classify the answer."""
        endpoint = target["endpoint"]
        try:
            check_endpoint(endpoint, allow_http=self.settings.push_allow_http_endpoints)
            body = encrypt(payload["data"], target["keys"])
            headers = {
                **payload["headers"],
                "Content-Encoding": "aes128gcm",
                "Authorization": self._authorization(endpoint),
            }
            response = self._http.post(endpoint, body, headers)
        except AddressNotAllowed as exc:  # an endpoint that is (now) internal: never call it
            raise PermanentChannelError(f"connect: {exc}") from None
        # ValueError covers unusable URLs (httpclient.UnusableURL is one) and bad keys.
        except (ValueError, http_ece.ECEException) as exc:
            raise PermanentChannelError(f"unusable push subscription: {exc}") from None
        except FAST_ERRORS as exc:
            raise RetryableChannelError(f"push service unreachable: {failure(exc)}") from None
        return _outcome(response)

    def _authorization(self, endpoint: str) -> str:
        audience = origin(endpoint)
        now = time.time()
        cached = self._tokens.get(audience)
        if cached and cached[1] > now:
            return cached[0]
        claims = {"aud": audience, "sub": self.subject, "exp": int(now) + VAPID_LIFETIME}
        header = self._vapid.sign(claims)["Authorization"]
        self._tokens[audience] = (header, now + VAPID_REUSE)
        return header

    def close(self) -> None:
        self._http.close()
