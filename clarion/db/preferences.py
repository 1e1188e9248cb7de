"""Subscribers' channel switches (the part of preferences delivery needs today)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from clarion.db.dialect import insert_for
from clarion.db.models import Preference

ANY_CATEGORY = "*"


def opted_out(*, session: Session, recipients: Iterable[str]) -> set[tuple[str, str, str]]:
    """(subscriber, category, channel) triples switched off; category "*" means all."""
    ids = list(recipients)
    if not ids:
        return set()
    rows = session.execute(
        select(Preference.subscriber_id, Preference.category, Preference.channel).where(
            Preference.subscriber_id.in_(ids), Preference.enabled.is_(False)
        )
    )
    return {tuple(r) for r in rows}


def set_switch(
    *,
    session: Session,
    subscriber_id: str,
    category: str,
    channel: str,
    enabled: bool,
    now: datetime,
) -> None:
    statement = insert_for(session, Preference).values(
        subscriber_id=subscriber_id,
        category=category,
        channel=channel,
        enabled=enabled,
        updated_at=now,
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["subscriber_id", "category", "channel"],
            set_={"enabled": enabled, "updated_at": now},
        )
    )
