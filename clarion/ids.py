"""Identifiers and clock. Ids are UUIDv7: time-ordered, so an id sorts like its creation time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import uuid6


def new_id() -> uuid.UUID:
    """A fresh UUIDv7 as a plain :class:`uuid.UUID`."""
    return uuid.UUID(int=uuid6.uuid7().int)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything Clarion stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
