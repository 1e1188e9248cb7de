"""Subscriber addresses at rest: sealed with Fernet, keyed from CLARION_SECRET_KEY.

A chat URL is a credential (a Slack webhook URL lets anyone post to the channel) and a
phone number is personal data, so neither is stored in clear: the key is derived with
HKDF-SHA256 from the secret key (its own ``info``, so it is independent of every other
use of that key), and addresses sealed under a retired key (CLARION_PREVIOUS_SECRET_KEYS)
still open until they are set again. The API shows only ``display``, a masked form.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarion.settings import Settings

INFO = b"clarion subscriber addresses v1"


class AddressUnreadable(Exception):
    """The sealed address opens under no known key (the secret key changed)."""


def _fernet(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _keys(settings: Settings) -> MultiFernet:
    secrets = [settings.secret_key, *(p.key for p in settings.previous_secret_keys)]
    return MultiFernet([_fernet(s.get_secret_value()) for s in secrets])


def seal(settings: Settings, address: str) -> str:
    return _keys(settings).encrypt(address.encode()).decode()


def unseal(settings: Settings, sealed: str) -> str:
    try:
        return _keys(settings).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise AddressUnreadable("sealed under a key this deployment no longer has") from None


def mask(text: str, keep: int = 4) -> str:
    """The last ``keep`` characters, the rest starred (at least half starred)."""
    keep = min(keep, len(text) // 2)
    return "*" * (len(text) - keep) + text[len(text) - keep :] if text else ""
