"""A token check parses the token once (clarion.core.tokens): it must accept and refuse
exactly what jwt.decode does, and pick keys by kid as before."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clarion.channels.links import key_id
from clarion.core import tokens
from clarion.core.auth import AuthError, verify_user_claims
from clarion.settings import Settings

KEY, OTHER = "k" * 40, "o" * 40


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def by_hand(header: dict, claims: dict | str, key: str = KEY) -> str:
    """A token HMAC-signed with any header and payload, which jwt.encode would not make."""
    payload = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload.encode())}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


HS = {"alg": "HS256", "typ": "JWT"}


def cases() -> dict[str, str]:
    """The tokens, made now (some are about the clock)."""
    now = int(time.time())
    good = {
        "sub": "ada",
        "aud": "clarion",
        "iss": "https://auth.test",
        "iat": now,
        "exp": now + 600,
    }

    def signed(key: str = KEY, headers: dict | None = None, **claims) -> str:
        return jwt.encode({**good, **claims}, key, algorithm="HS256", headers=headers)

    return {
        "good": signed(),
        "good, kid": signed(headers={"kid": "any"}),
        "other key": signed(OTHER),
        "tampered payload": signed(sub="eve").rpartition(".")[0] + "." + signed().split(".")[2],
        "tampered signature": signed()[:-4] + "AAAA",
        "no signature": signed().rpartition(".")[0] + ".",
        "alg none": jwt.encode(good, None, algorithm="none"),
        "alg HS512": jwt.encode(good, KEY * 2, algorithm="HS512"),
        "no alg": by_hand({"typ": "JWT"}, good),
        "alg not a string": by_hand({"alg": ["HS256"]}, good),
        "kid not a string": by_hand({**HS, "kid": 7}, good),
        "crit unknown": by_hand({**HS, "crit": ["x"], "x": 1}, good),
        "b64 false": by_hand({**HS, "b64": False, "crit": ["b64"]}, good),
        "expired": signed(exp=now - 60),
        "expired within leeway": signed(exp=now - 10),
        "not yet valid": signed(nbf=now + 60),
        "issued in the future": signed(iat=now + 60),
        "iat not a number": signed(iat="yesterday"),
        "exp not a number": signed(exp="soon"),
        "other audience": signed(aud="someone-else"),
        "audience list": signed(aud=["x", "clarion"]),
        "other issuer": signed(iss="https://evil.test"),
        "no issuer": by_hand(HS, {k: v for k, v in good.items() if k != "iss"}),
        "no exp": by_hand(HS, {k: v for k, v in good.items() if k != "exp"}),
        "sub not a string": signed(sub=42),
        "jti not a string": signed(jti=42),
        "payload not an object": by_hand(HS, "[1, 2]"),
        "payload not json": by_hand(HS, "{nope"),
        "garbage": "not-a-jwt",
        "two segments": signed().rpartition(".")[0],
        "four segments": signed() + ".AAAA",
        "padded (pyjwt accepts it)": signed() + "=",
    }


NAMES = list(cases())

ACCEPTED = {
    "good",
    "good, kid",
    "expired within leeway",
    "audience list",
    "padded (pyjwt accepts it)",
}


def outcome(check) -> object:
    try:
        return check()
    except jwt.PyJWTError as exc:
        return type(exc)


@pytest.mark.parametrize("name", NAMES)
def test_one_parse_accepts_and_refuses_exactly_what_jwt_decode_does(name):
    token = cases()[name]
    checks = {"audience": "clarion", "issuer": "https://auth.test", "leeway": 30}
    require = ["exp", "sub", "aud"]
    reference = outcome(
        lambda: jwt.decode(token, KEY, algorithms=["HS256"], options={"require": require}, **checks)
    )
    ours = outcome(
        lambda: tokens.decode(
            token, algorithms=("HS256",), keys=lambda alg, kid: [KEY], require=require, **checks
        )
    )
    assert ours == reference  # the claims, or the same error (one fault per case)
    assert isinstance(ours, dict) == (name in ACCEPTED)


def test_the_kid_picks_the_key_as_before():
    current, previous = "c" * 40, "p" * 40
    settings = Settings(
        secret_key=current,
        previous_secret_keys=[
            {"key": previous, "until": (datetime.now(UTC) + timedelta(1)).isoformat()}
        ],
    )
    now = int(time.time())
    claims = {"sub": "ada", "aud": "clarion", "iat": now, "exp": now + 600}

    def token(key: str, kid: str | None) -> str:
        return jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid} if kid else None)

    for key in (current, previous):
        assert verify_user_claims(settings, token(key, key_id(key))).subject == "ada"
        assert verify_user_claims(settings, token(key, None)).subject == "ada"  # before kids
        assert verify_user_claims(settings, token(key, "unknown")).subject == "ada"
    # A kid names one key: a token signed with another is refused, even one of ours.
    with pytest.raises(AuthError):
        verify_user_claims(settings, token(current, key_id(previous)))
    with pytest.raises(AuthError):
        verify_user_claims(settings, token(previous, key_id(current)))
    with pytest.raises(AuthError):
        verify_user_claims(settings, token("x" * 40, key_id(current)))


def pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_producer_tokens_verify_with_the_public_key_and_nothing_else():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {"sub": "ada", "aud": "clarion", "iat": now, "exp": now + 600}
    settings = Settings(secret_key=KEY, jwt_public_key=pem(rsa_key.public_key()))

    assert verify_user_claims(settings, jwt.encode(claims, rsa_key, algorithm="RS256")).subject
    assert verify_user_claims(settings, jwt.encode(claims, KEY, algorithm="HS256")).subject
    refused = [
        jwt.encode(claims, ec_key, algorithm="ES256"),  # an allowed alg, not this key
        jwt.encode(claims, rsa_key, algorithm="RS512"),  # not an allowed alg
        by_hand(HS, claims, key=settings.jwt_public_key),  # HS256 keyed with the PEM text
        by_hand({"alg": "HS384"}, claims, key=settings.jwt_public_key),
        jwt.encode(claims, None, algorithm="none"),
    ]
    for token in refused:
        with pytest.raises(AuthError):
            verify_user_claims(settings, token)

    # An allowed alg that does not fit the key, or that pyjwt does not know: a refusal.
    odd = Settings(
        secret_key=KEY, jwt_public_key=pem(rsa_key.public_key()), jwt_algorithms=["ES256", "XX1"]
    )
    for token in (jwt.encode(claims, ec_key, algorithm="ES256"), by_hand({"alg": "XX1"}, claims)):
        with pytest.raises(AuthError):
            verify_user_claims(odd, token)
