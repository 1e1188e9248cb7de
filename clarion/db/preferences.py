"""Subscribers' preferences: channel switches, digest cadences, quiet hours and time zone.

Reads take a whole batch of recipients (one query each, whatever their number); writes are
upserts, so repeating an update changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import insert_for, one_of
from clarion.db.models import CategoryPreference, Preference, Subscriber

ANY_CATEGORY = "*"


def switches(*, session: Session, recipients: Collection[str]) -> list[tuple[str, str, str, bool]]:
    """(subscriber, category, channel, enabled) of every stored switch; category "*" = all."""
    rows = session.execute(
        select(
            Preference.subscriber_id, Preference.category, Preference.channel, Preference.enabled
        ).where(one_of(session, Preference.subscriber_id, recipients))
    )
    return [tuple(r) for r in rows]


def digests(
    *, session: Session, recipients: Collection[str]
) -> list[tuple[str, str, str, str | None, int | None]]:
    """(subscriber, category, cadence, at, weekday) of every stored digest choice."""
    rows = session.execute(
        select(
            CategoryPreference.subscriber_id,
            CategoryPreference.category,
            CategoryPreference.digest,
            CategoryPreference.digest_at,
            CategoryPreference.digest_weekday,
        ).where(one_of(session, CategoryPreference.subscriber_id, recipients))
    )
    return [tuple(r) for r in rows]


def profiles(
    *, session: Session, recipients: Collection[str]
) -> list[tuple[str, str | None, str | None, str | None]]:
    """(subscriber, timezone, quiet start, quiet end) of those with a zone or quiet hours."""
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.timezone,
            Subscriber.quiet_hours_start,
            Subscriber.quiet_hours_end,
        ).where(
            one_of(session, Subscriber.id, recipients),
            or_(Subscriber.timezone.is_not(None), Subscriber.quiet_hours_start.is_not(None)),
        )
    )
    return [tuple(r) for r in rows]


def set_switch(
    *,
    session: Session,
    subscriber_id: str,
    category: str,
    channel: str,
    enabled: bool,
    now: datetime,
) -> None:
    """Switch one channel on or off for a category ("*" = every category)."""
    set_switches(
        session=session,
        subscriber_id=subscriber_id,
        switches={(category, channel): enabled},
        now=now,
    )


def set_switches(
    *,
    session: Session,
    subscriber_id: str,
    switches: Mapping[tuple[str, str], bool],
    now: datetime,
) -> None:
    """Store several (category, channel) → enabled switches in one statement."""
    if not switches:
        return
    statement = insert_for(session, Preference)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["subscriber_id", "category", "channel"],
            set_={
                "enabled": statement.excluded.enabled,
                "updated_at": statement.excluded.updated_at,
            },
        ),
        [
            {
                "subscriber_id": subscriber_id,
                "category": category,
                "channel": channel,
                "enabled": enabled,
                "updated_at": now,
            }
            for (category, channel), enabled in sorted(switches.items())
        ],
    )


def set_digests(
    *,
    session: Session,
    subscriber_id: str,
    digests: Mapping[str, tuple[str, str | None, int | None]],
    now: datetime,
) -> None:
    """Store category → (cadence, at, weekday) digest choices in one statement."""
    if not digests:
        return
    statement = insert_for(session, CategoryPreference)
    excluded = statement.excluded
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["subscriber_id", "category"],
            set_={
                "digest": excluded.digest,
                "digest_at": excluded.digest_at,
                "digest_weekday": excluded.digest_weekday,
                "updated_at": excluded.updated_at,
            },
        ),
        [
            {
                "subscriber_id": subscriber_id,
                "category": category,
                "digest": cadence,
                "digest_at": at,
                "digest_weekday": weekday,
                "updated_at": now,
            }
            for category, (cadence, at, weekday) in sorted(digests.items())
        ],
    )


def set_profile(
    *, session: Session, subscriber_id: str, values: Mapping[str, str | None], now: datetime
) -> None:
    """Set any of timezone, quiet_hours_start, quiet_hours_end on an existing subscriber."""
    if values:
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber_id)
            .values(**values, updated_at=now)
        )
