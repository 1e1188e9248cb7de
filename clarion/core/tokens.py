"""Checking a signed token (a JWS) with one parse and keys prepared once.

``jwt.decode`` needs its key before it parses the token, and prepares (checks) that key on
every call; Clarion picks the key by the header's ``alg`` and ``kid``, which cost a second
parse (``jwt.get_unverified_header``). Those were most of a token check's CPU, the largest
piece of Clarion's own work per WebSocket connect (docs/benchmarks/stream.md, branch
storm-token). Here pyjwt parses the token once and checks its claims (``decode_complete``),
the ``alg`` must be one of those allowed, and pyjwt's algorithm object verifies the
signature with a key it prepared once. What is accepted and refused is jwt.decode's
(tests/unit/test_token_checks.py compares them); only which error a token with several
faults gets may differ (the claims are checked before the signature).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable
from typing import Any

import jwt
from jwt.types import Options


def _options(require: list[str]) -> Options:
    """Every claim check jwt.decode makes, asked for by name: pyjwt skips them by default
    when it is not the one verifying the signature."""
    return {
        "verify_signature": False,
        "verify_exp": True,
        "verify_nbf": True,
        "verify_iat": True,
        "verify_aud": True,
        "verify_iss": True,
        "verify_sub": True,
        "verify_jti": True,
        "require": require,
    }


@functools.lru_cache(maxsize=32)
def _prepared(alg: str, key: str) -> Any:
    """``key`` as pyjwt's ``alg`` uses it; raises what jwt.decode would for a key that does
    not fit (a public key as an HMAC secret, a secret as a public key)."""
    return jwt.get_algorithm_by_name(alg).prepare_key(key)


def decode(
    token: str,
    *,
    algorithms: Collection[str],
    keys: Callable[[str, object], Iterable[str]],
    require: list[str],
    audience: str | None = None,
    issuer: str | None = None,
    leeway: float = 0,
) -> dict[str, Any]:
    """The claims of ``token`` when its ``alg`` is one of ``algorithms``, it is signed with
    one of ``keys(alg, kid)`` and its claims are valid; a jwt.PyJWTError otherwise."""
    decoded = jwt.decode_complete(
        token,
        options=_options(require),
        audience=audience,
        issuer=issuer,
        leeway=leeway,
    )
    header = decoded["header"]
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:  # "none" and alg confusion
        raise jwt.InvalidAlgorithmError("The specified alg value is not allowed")
    try:
        algorithm = jwt.get_algorithm_by_name(alg)
    except NotImplementedError:
        raise jwt.InvalidAlgorithmError("Algorithm not supported") from None
    signing_input = token.rpartition(".")[0].encode()
    for key in keys(alg, header.get("kid")):
        if algorithm.verify(signing_input, _prepared(alg, key), decoded["signature"]):
            return decoded["payload"]
    raise jwt.InvalidSignatureError("Signature verification failed")
