"""Stored template versions. A version is never edited: a change is a new version, and
exactly one version per (key, channel, locale) is active (a partial unique index)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import lock_name
from clarion.db.models import Template


def active_versions(*, session: Session, keys: Iterable[str] | None = None) -> list[Template]:
    """The active version of every (key, channel, locale); only these keys when given."""
    stmt = select(Template).where(Template.active)
    if keys is not None:
        keys = sorted(set(keys))
        if not keys:
            return []
        stmt = stmt.where(Template.key.in_(keys))
    return list(session.scalars(stmt.order_by(Template.key, Template.channel, Template.locale)))


def versions_of(*, session: Session, key: str) -> list[Template]:
    """Every stored version of a key, newest first within each channel and locale."""
    return list(
        session.scalars(
            select(Template)
            .where(Template.key == key)
            .order_by(Template.channel, Template.locale, Template.version.desc())
        )
    )


def get(*, session: Session, key: str, id: int) -> Template | None:
    """One version of the key by id (None if the id belongs to another key)."""
    row = session.get(Template, id)
    return row if row is not None and row.key == key else None


def _deactivate_slot(session: Session, key: str, channel: str, locale: str) -> None:
    # Before a version becomes active: the partial unique index allows one active row.
    session.execute(
        update(Template)
        .where(
            Template.key == key,
            Template.channel == channel,
            Template.locale == locale,
            Template.active,
        )
        .values(active=False)
    )


def add_version(
    *,
    session: Session,
    key: str,
    channel: str,
    locale: str,
    subject: str | None,
    html: str | None,
    text: str | None,
    active: bool,
    created_by: str,
    now: datetime,
) -> Template:
    """Insert version n+1 of (key, channel, locale), active unless told otherwise.

    Concurrent saves of one slot take turns (a lock on the slot's name until commit), so
    each numbers after the last; the unique indexes stay the backstop.
    """
    lock_name(session, f"clarion:template:{key}:{channel}:{locale}")
    latest = session.scalar(
        select(func.max(Template.version)).where(
            Template.key == key, Template.channel == channel, Template.locale == locale
        )
    )
    if active:
        _deactivate_slot(session, key, channel, locale)
    row = Template(
        key=key,
        channel=channel,
        locale=locale,
        version=(latest or 0) + 1,
        subject=subject,
        html=html,
        text=text,
        active=active,
        created_at=now,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def activate(*, session: Session, row: Template) -> None:
    """Make this version the active one of its (key, channel, locale)."""
    if row.active:
        return
    _deactivate_slot(session, row.key, row.channel, row.locale)
    session.execute(update(Template).where(Template.id == row.id).values(active=True))
    session.refresh(row)


def deactivate(*, session: Session, row: Template) -> None:
    """Leave the slot without an active stored version (the fallback, or a built-in, is
    used again)."""
    session.execute(update(Template).where(Template.id == row.id).values(active=False))
    session.refresh(row)


def delete(*, session: Session, row: Template) -> None:
    session.delete(row)
    session.flush()


def keys(*, session: Session) -> list[str]:
    """Every key with a stored version, active or not."""
    return list(session.scalars(select(Template.key).distinct().order_by(Template.key)))
