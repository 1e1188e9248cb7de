"""Producer API keys and end-user tokens.

API keys are 256-bit random secrets, so a single SHA-256 is the right hash (a slow password
hash protects low-entropy secrets; it would only add latency here). Lookups go through a
short per-process cache: revoking a key takes effect within ``api_key_cache_seconds``.

User tokens are JWTs with ``sub`` = subscriber id: HS256 signed with CLARION_SECRET_KEY
(``clarion token``), or issued by the producer's own auth and checked with
CLARION_JWT_PUBLIC_KEY. The accepted algorithms are always explicit, so ``alg: none`` and
algorithm confusion are refused by pyjwt. None is used longer than
CLARION_USER_TOKEN_MAX_LIFETIME_SECONDS after its ``iat``.

What Clarion signs (user tokens, unsubscribe links) names its key in the header's ``kid``,
so the secret can be rotated: CLARION_PREVIOUS_SECRET_KEYS still verify until their time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from clarion.channels.links import (
    PUSH_ACTION_AUDIENCE,
    UNSUBSCRIBE_AUDIENCE,
    key_id,
    signing_key,
)
from clarion.core import tokens
from clarion.db.dialect import dml
from clarion.db.models import ApiKey
from clarion.ids import utcnow
from clarion.settings import Settings, valid_rate_limit

SCOPES = ("notify", "admin")
KEY_PREFIX = "clk_"
# A user token is a few hundred bytes; a longer one is refused before it is decoded.
MAX_TOKEN_BYTES = 8 * 1024


class AuthError(Exception):
    """Credentials missing, malformed, expired or not ours: always a 401, never details."""


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    scopes: frozenset[str]
    # The key's own limits; None: the settings' defaults (clarion.api.ratelimit).
    rate_limit: str | None = None
    daily_quota: int | None = None

    def allows(self, scope: str) -> bool:
        # admin can do everything notify can.
        return "admin" in self.scopes or scope in self.scopes


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    *,
    session: Session,
    name: str,
    scopes: list[str],
    rate_limit: str | None = None,
    daily_quota: int | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its secret, which is never stored or shown again.
    ``rate_limit`` / ``daily_quota``: the key's own limits (None: the settings')."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {SCOPES}, got {scopes}")
    _check_limits(rate_limit, daily_quota)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        prefix=secret[:12],
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
        created_at=utcnow(),
        rate_limit=rate_limit,
        daily_quota=daily_quota,
    )
    session.add(row)
    session.flush()
    return row, secret


def _check_limits(rate_limit: str | None, daily_quota: int | None) -> None:
    if rate_limit is not None:
        valid_rate_limit(rate_limit)
    if daily_quota is not None and daily_quota < 0:
        raise ValueError("the daily quota must be 0 (none) or more recipients")


UNCHANGED: Any = object()


def set_api_key_limits(
    *, session: Session, id: int, rate_limit: Any = UNCHANGED, daily_quota: Any = UNCHANGED
) -> ApiKey | None:
    """Change an active key's own limits (None: back to the settings'); None if no such
    key. API processes see the change within ``api_key_cache_seconds``."""
    row = session.get(ApiKey, id)
    if row is None or row.revoked_at is not None:
        return None
    _check_limits(
        None if rate_limit is UNCHANGED else rate_limit,
        None if daily_quota is UNCHANGED else daily_quota,
    )
    if rate_limit is not UNCHANGED:
        row.rate_limit = rate_limit
    if daily_quota is not UNCHANGED:
        row.daily_quota = daily_quota
    session.flush()
    return row


def revoke_api_key(*, session: Session, id: int) -> bool:
    stmt = update(ApiKey).where(ApiKey.id == id, ApiKey.revoked_at.is_(None))
    return dml(session.execute(stmt.values(revoked_at=utcnow()))).rowcount > 0


class ApiKeyVerifier:
    """Resolves a bearer secret to a Principal, caching answers (good and bad) briefly."""

    def __init__(self, sessions: sessionmaker[Session], cache_seconds: float) -> None:
        self._sessions = sessions
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def known(self, secret: str) -> Principal | None:
        """The key's principal if this process has it at hand (verified within the cache's
        TTL), else None: no database, no wait. A revoked or unknown key is never known."""
        digest = hash_key(secret)
        with self._lock:
            hit = self._cache.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def verify(self, secret: str) -> Principal:
        digest = hash_key(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is None or hit[0] < now:
            hit = (now + self._ttl, self._load(digest))
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = hit
        if hit[1] is None:
            raise AuthError("invalid API key")
        return hit[1]

    def _load(self, digest: str) -> Principal | None:
        with self._sessions() as session:
            row = session.execute(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            ).scalar_one_or_none()
        if row is None:
            return None
        return Principal(
            key_id=row.id,
            name=row.name,
            scopes=frozenset(row.scopes),
            rate_limit=row.rate_limit,
            daily_quota=row.daily_quota,
        )


# Clock skew tolerated on exp and iat (HTTP requests; live streams end at exp exactly).
LEEWAY_SECONDS = 30
# A subscriber id as the database stores it (subscribers.id is VARCHAR(255)).
MAX_SUBJECT_CHARS = 255


class TokenLifetimeError(ValueError):
    """A token was asked to live longer than CLARION_USER_TOKEN_MAX_LIFETIME_SECONDS: every
    Clarion process would refuse it before its exp, so it is not issued at all."""


@dataclass(frozen=True)
class UserToken:
    """A verified user token: whose it is, and until when (epoch seconds) it may be used."""

    subject: str
    expires_at: float


def _verification_keys(settings: Settings, kid: object) -> list[str]:
    """The secrets that may have signed an HS256 token: the one its ``kid`` names, else all
    (tokens and links made before kids, or by producers signing with the shared secret)."""
    now = utcnow()
    keys = [settings.secret_key.get_secret_value()] + [
        p.key.get_secret_value() for p in settings.previous_secret_keys if p.until > now
    ]
    return [k for k in keys if key_id(k) == kid] or keys


def _decode_hs256(settings: Settings, token: str, **checks: Any) -> dict:
    """The claims of a token signed HS256 with the current or a previous secret."""
    return tokens.decode(
        token,
        algorithms=("HS256",),
        keys=lambda alg, kid: _verification_keys(settings, kid),
        **checks,
    )


def _decode_current(settings: Settings, token: str, **checks: Any) -> dict:
    """The claims of a token signed HS256 with the current secret (those Clarion signs
    without a kid: sign-in links, the page's session, push actions)."""
    secret = settings.secret_key.get_secret_value()
    return tokens.decode(token, algorithms=("HS256",), keys=lambda alg, kid: [secret], **checks)


def issue_user_token(settings: Settings, subscriber_id: str, ttl_seconds: int | None = None) -> str:
    """A user token (HS256, with the current key's ``kid``); TokenLifetimeError past the max."""
    ttl = ttl_seconds or settings.token_ttl_seconds
    if ttl > settings.user_token_max_lifetime_seconds:
        raise TokenLifetimeError(
            f"a token may live at most {settings.user_token_max_lifetime_seconds} s "
            "(CLARION_USER_TOKEN_MAX_LIFETIME_SECONDS)"
        )
    now = utcnow()
    claims = {
        "sub": subscriber_id,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(seconds=ttl),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    secret, header = signing_key(settings)
    return jwt.encode(claims, secret, algorithm="HS256", headers=header)


def verify_user_token(settings: Settings, token: str) -> str:
    """The subscriber id of a valid token; AuthError for anything else."""
    return verify_user_claims(settings, token).subject


def verify_user_claims(settings: Settings, token: str) -> UserToken:
    """The subscriber and the end of use of a valid token; AuthError for anything else."""
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("token too long")
    public_key = settings.jwt_public_key

    def keys(alg: str, kid: object) -> list[str]:
        # HS256: Clarion's secrets; any other allowed alg: the producer's public key.
        if alg == "HS256":
            return _verification_keys(settings, kid)
        return [public_key] if public_key else []

    try:
        claims = tokens.decode(
            token,
            algorithms={"HS256", *settings.jwt_algorithms} if public_key else ("HS256",),
            keys=keys,
            require=["exp", "sub", "aud"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=LEEWAY_SECONDS,
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    return UserToken(_subject(claims.get("sub")), _expires_at(settings, claims))


def _subject(value: object) -> str:
    # The subject becomes a query parameter: one the database cannot store is a bad token.
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SUBJECT_CHARS or "\x00" in value:
        raise AuthError("the token's subject is not a subscriber id")
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate
        raise AuthError("the token's subject is not a subscriber id") from None
    return value


def _expires_at(settings: Settings, claims: dict) -> float:
    """The earlier of exp and iat + the maximum lifetime (pyjwt has checked both are numbers).

    A token without iat (some identity providers leave it out) cannot show its age, so it
    is accepted only while its exp is within the maximum lifetime from now.
    """
    now, limit = time.time(), settings.user_token_max_lifetime_seconds
    exp, iat = claims["exp"], claims.get("iat")
    if iat is None:
        if exp > now + limit:
            raise AuthError("a token without iat must expire within the maximum lifetime")
        return float(exp)
    if now > iat + limit + LEEWAY_SECONDS:
        raise AuthError("the token is older than the maximum lifetime")
    return float(min(exp, iat + limit))


def verify_unsubscribe_token(settings: Settings, token: str) -> tuple[str, str, str]:
    """(subscriber, category, channel) of a valid link; AuthError for anything else."""
    try:
        claims = _decode_hs256(
            settings, token, audience=UNSUBSCRIBE_AUDIENCE, require=["sub", "aud"]
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    values = (claims.get("sub"), claims.get("cat"), claims.get("ch"))
    if not all(isinstance(v, str) and v for v in values):
        raise AuthError("incomplete unsubscribe link")
    return values  # type: ignore[return-value]


# The notification centre's page (/ui/) signs in without keeping a user token anywhere
# persistent: a sign-in link carries a short-lived token of its own audience in the URL
# fragment (never sent to a server log), the page trades it once for a session cookie
# (HttpOnly, of a third audience) and short user tokens, and trades the cookie for fresh
# ones. None of the three is accepted where another is expected.
UI_LOGIN_AUDIENCE = "clarion:ui-login"
UI_SESSION_AUDIENCE = "clarion:ui-session"


def _scoped_token(settings: Settings, subscriber_id: str, audience: str, ttl_seconds: int) -> str:
    now = utcnow()
    claims = {"sub": subscriber_id, "aud": audience, "iat": now}
    claims["exp"] = now + timedelta(seconds=ttl_seconds)
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm="HS256")


def _verify_scoped(settings: Settings, token: str, audience: str) -> str:
    try:
        claims = _decode_current(settings, token, audience=audience, require=["exp", "sub", "aud"])
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("token has no subject")
    return subject


def ui_login_token(settings: Settings, subscriber_id: str, ttl_seconds: int = 3600) -> str:
    """The token of a sign-in link to the notification centre (``/ui/#login=<token>``)."""
    return _scoped_token(settings, subscriber_id, UI_LOGIN_AUDIENCE, ttl_seconds)


def verify_ui_login(settings: Settings, token: str) -> str:
    """The subscriber of a valid sign-in link token; AuthError otherwise."""
    return _verify_scoped(settings, token, UI_LOGIN_AUDIENCE)


def ui_session_token(settings: Settings, subscriber_id: str, ttl_seconds: int) -> str:
    """The value of the page's session cookie."""
    return _scoped_token(settings, subscriber_id, UI_SESSION_AUDIENCE, ttl_seconds)


def verify_ui_session(settings: Settings, token: str) -> str:
    """The subscriber of a valid session cookie; AuthError otherwise."""
    return _verify_scoped(settings, token, UI_SESSION_AUDIENCE)


def verify_push_action_token(settings: Settings, token: str) -> tuple[str, str]:
    """(subscriber, notification id) of a valid push action token; AuthError otherwise."""
    try:
        claims = _decode_current(
            settings,
            token,
            audience=PUSH_ACTION_AUDIENCE,
            require=["sub", "nid", "aud", "exp"],
            leeway=30,
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    subject, nid = claims.get("sub"), claims.get("nid")
    if not (isinstance(subject, str) and subject and isinstance(nid, str) and nid):
        raise AuthError("incomplete push action token")
    return subject, nid
