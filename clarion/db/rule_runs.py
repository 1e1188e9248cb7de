"""Rule runs, operators' rule settings, and ingested events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clarion.db.dialect import dml, insert_for
from clarion.db.models import Event, RuleRun, RuleSetting


def start_run(
    *, session: Session, key: str, trigger: str, now: datetime, as_of: datetime, event_id=None
) -> int:
    run = RuleRun(
        rule_key=key,
        trigger=trigger,
        started_at=now,
        as_of=as_of,
        candidates=0,
        created=0,
        duplicates=0,
        event_id=event_id,
    )
    session.add(run)
    session.flush()
    return run.id


def finish_run(*, session: Session, id: int, now: datetime, **counts: Any) -> None:
    session.execute(update(RuleRun).where(RuleRun.id == id).values(finished_at=now, **counts))


def runs_of(*, session: Session, key: str, limit: int, before_id: int | None = None) -> list:
    query = select(RuleRun).where(RuleRun.rule_key == key)
    if before_id is not None:
        query = query.where(RuleRun.id < before_id)
    return list(session.scalars(query.order_by(RuleRun.id.desc()).limit(limit)))


def last_runs(*, session: Session) -> dict[str, RuleRun]:
    """The newest run of every rule that ran."""
    newest = select(func.max(RuleRun.id)).group_by(RuleRun.rule_key)
    return {r.rule_key: r for r in session.scalars(select(RuleRun).where(RuleRun.id.in_(newest)))}


def overrides(*, session: Session) -> dict[str, RuleSetting]:
    return {s.key: s for s in session.scalars(select(RuleSetting))}


def set_override(
    *,
    session: Session,
    key: str,
    enabled: bool | None,
    config: dict[str, Any],
    actor: str,
    now: datetime,
) -> None:
    values = {"enabled": enabled, "config": config, "updated_at": now, "updated_by": actor}
    statement = insert_for(session, RuleSetting).values(key=key, **values)
    session.execute(statement.on_conflict_do_update(index_elements=["key"], set_=values))


def store_event(*, session: Session, event: dict[str, Any], now: datetime) -> bool:
    """Insert the event once; False when its id was stored already (a resend)."""
    statement = insert_for(session, Event).values(received_at=now, **event)
    result = session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))
    return bool(dml(result).rowcount)


def get_event(*, session: Session, id: uuid.UUID) -> Event | None:
    return session.get(Event, id)
