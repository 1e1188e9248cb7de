"""Identifiers and clock. Ids are UUIDv7: time-ordered, so an id sorts like its creation time."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import uuid6


def new_id() -> uuid.UUID:
    """A fresh UUIDv7 as a plain :class:`uuid.UUID`."""
    return uuid.UUID(int=uuid6.uuid7().int)


def derived_id(namespace: uuid.UUID, name: str, at: datetime) -> uuid.UUID:
    """A UUIDv7 that is a function of its inputs: the time part is ``at`` (milliseconds),
    the 74 "random" bits come from SHA-256 of (namespace, name).

    A topic fan-out names each recipient's notification this way (namespace = request id),
    so a fan-out that runs again after a crash produces the same ids and the create step
    skips what already exists.
    """
    return derived_ids(namespace, [name], at)[0]


def derived_ids(namespace: uuid.UUID, names: list[str], at: datetime) -> list[uuid.UUID]:
    """:func:`derived_id` of each name, the shared parts (time, namespace hash state)
    computed once: a fan-out batch names 1,000 recipients."""
    millis = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    head = millis << 80 | 0x7 << 76 | 0b10 << 62
    prefix = hashlib.sha256(namespace.bytes)
    ids = []
    for name in names:
        h = prefix.copy()
        h.update(name.encode())
        digest = int.from_bytes(h.digest()[:10])
        rand_a, rand_b = (digest >> 62) & 0xFFF, digest & ((1 << 62) - 1)
        ids.append(uuid.UUID(int=head | rand_a << 64 | rand_b))
    return ids


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything Clarion stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
