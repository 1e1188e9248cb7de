"""Recurring schedules for producers: create, list, read, change, pause, resume, delete.

The functions the ``/v1/schedules`` router and the MCP tools both call; errors are
:class:`~clarion.api.problems.Problem`. Creating a schedule stores one row (and bare
subscribers for unknown recipient ids, as a topic does); beat does the rest
(:mod:`clarion.core.recurring`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from clarion.api import idempotent
from clarion.api.problems import Problem, check_template
from clarion.api.schedule_schemas import (
    Occurrence,
    ScheduleCreate,
    ScheduleFilter,
    SchedulePage,
    SchedulePublic,
    ScheduleUpdate,
)
from clarion.core.auth import Principal
from clarion.core.recurrence import (
    SUBSCRIBER,
    Recurrence,
    default_start,
    instant,
    iso,
)
from clarion.core.recurring import clock, series_of
from clarion.core.schemas import NotificationContent
from clarion.db import schedules as schedules_db
from clarion.db import subscribers
from clarion.db.models import Schedule
from clarion.db.session import transaction
from clarion.ids import new_id, utcnow

CONTENT_FIELDS = frozenset(NotificationContent.model_fields) - {
    "send_at",
    "expires_at",
    "dedupe_key",
}
SHOWN_OCCURRENCES = 5


def not_found() -> Problem:
    return Problem(404, "not-found", "No such schedule.")


def _restart(now: datetime) -> dict[str, Any]:
    """Start over from ``now``: nothing that fell before it is owed."""
    return {
        "status": schedules_db.ACTIVE,
        "anchor_at": now,
        "next_at": now,
        "zones": None,
        "probed_through": None,
    }


def _definition(body: ScheduleCreate, now: datetime) -> dict[str, Any]:
    rec = body.recurrence
    dtstart = rec.dtstart or default_start(rec.zone_name(), now)
    return {
        "name": body.name,
        "recipients": body.recipients,
        "topic": body.topic,
        "content": body.model_dump(mode="json", include=CONTENT_FIELDS),
        "rrule": rec.rule_text(),
        "every": rec.every,
        "dtstart": iso(dtstart),
        "timezone": rec.timezone,
        "fallback_timezone": rec.fallback_timezone,
        "catch_up": rec.catch_up,
    }


def _actor(principal: Principal) -> str:
    return f"api-key:{principal.name}#{principal.key_id}"


def create(
    runtime, principal: Principal, body: ScheduleCreate, idempotency_key: str | None
) -> tuple[dict[str, Any], bool]:
    """Store the schedule; its answer (``SchedulePublic`` as JSON), and whether it is the
    replay of an earlier request with the same ``Idempotency-Key``."""
    if body.template is not None:
        check_template(runtime, body.template, body.data)

    def make() -> dict[str, Any]:
        now = utcnow()
        values = {
            "id": new_id(),
            "created_by": _actor(principal),
            **_definition(body, now),
            **_restart(now),
            "created_at": now,
            "updated_at": now,
        }
        with transaction(runtime.sessions) as session:
            # Grouping by zone reads the recipients' profiles: they must exist.
            subscribers.ensure(session=session, ids=body.recipients or [], now=now)
            row = schedules_db.insert(session=session, values=values)
            return public(row, now).model_dump(mode="json")

    return idempotent.once(runtime, principal, idempotency_key, body.model_dump(mode="json"), make)


def _recurrence(row: Schedule) -> Recurrence:
    return Recurrence(
        rrule=None if row.every else row.rrule,
        every=row.every,
        dtstart=datetime.fromisoformat(row.dtstart),
        timezone=row.timezone,
        fallback_timezone=row.fallback_timezone,
        catch_up=row.catch_up,
    )


def _upcoming(row: Schedule, now: datetime) -> list[Occurrence]:
    """The next occurrences from now: on the schedule's zone, or (timezone 'subscriber')
    on the fallback zone's clock, as local times only."""
    if row.status == schedules_db.ENDED:
        return []
    series = series_of(row)
    fixed = row.timezone != SUBSCRIBER
    zone_clock = clock(row, row.timezone if fixed else "")
    last = series.last_at_or_before(zone_clock, now)
    if last is not None:
        found = series.upcoming(last, SHOWN_OCCURRENCES, since=last)
    elif (first := series.after(None)) is not None:
        found = [first, *series.upcoming(first, SHOWN_OCCURRENCES - 1, since=first)]
    else:
        found = []
    return [Occurrence(local=o, at=instant(o, zone_clock) if fixed else None) for o in found]


def public(row: Schedule, now: datetime | None = None) -> SchedulePublic:
    """The schedule as producers and agents see it."""
    return SchedulePublic(
        id=row.id,
        name=row.name,
        status=row.status,
        recipients=row.recipients,
        topic=row.topic,
        content=NotificationContent.model_validate(row.content),
        recurrence=_recurrence(row),
        rrule=row.rrule,
        next_occurrences=_upcoming(row, now or utcnow()),
        next_at=row.next_at,
        last_sent_at=row.last_sent_at,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def listing(session: Session, query: ScheduleFilter) -> SchedulePage:
    rows = schedules_db.page(
        session=session,
        status=query.status,
        topic=query.topic,
        after=query.cursor,
        limit=query.limit + 1,
    )
    shown = rows[: query.limit]
    now = utcnow()
    return SchedulePage(
        items=[public(r, now) for r in shown],
        next_cursor=shown[-1].id if len(rows) > query.limit else None,
    )


def get(session: Session, id: uuid.UUID) -> SchedulePublic:
    row = schedules_db.get(session=session, id=id)
    if row is None:
        raise not_found()
    return public(row)


def _as_create(row: Schedule) -> dict[str, Any]:
    return {
        **{k: v for k, v in row.content.items() if k in CONTENT_FIELDS},
        "name": row.name,
        "recipients": row.recipients,
        "topic": row.topic,
        "recurrence": _recurrence(row).model_dump(mode="json", exclude_none=True),
    }


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The stored schedule with the patch applied; a patch naming one of two exclusive
    fields (recipients/topic, title/template) drops the other."""
    merged = {**current, **patch}
    pairs = (("recipients", ("topic",)), ("topic", ("recipients",)))
    pairs += (("template", ("title", "body")), ("title", ("template", "data")))
    for field, others in pairs:
        if patch.get(field) is not None:
            for other in others:
                if other not in patch:
                    merged[other] = None
    return merged


def update_schedule(runtime, id: uuid.UUID, body: ScheduleUpdate) -> SchedulePublic:
    """Apply a partial change, checked as a whole like a new schedule."""
    patch = body.model_dump(mode="json", exclude_unset=True)
    now = utcnow()
    with transaction(runtime.sessions) as session:
        row = schedules_db.get(session=session, id=id, lock=True)
        if row is None:
            raise not_found()
        try:
            changed = ScheduleCreate.model_validate(_merge(_as_create(row), patch))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        if changed.template is not None:
            check_template(runtime, changed.template, changed.data)
        values = {**_definition(changed, now), "updated_at": now}
        if {"recurrence", "recipients", "topic"} & set(patch) and row.status != "paused":
            values.update(_restart(now))
        subscribers.ensure(session=session, ids=changed.recipients or [], now=now)
        schedules_db.save_state(session=session, row=row, values=values)
        session.refresh(row)
        return public(row, now)


def _switch(runtime, id: uuid.UUID, pause: bool) -> SchedulePublic:
    now = utcnow()
    with transaction(runtime.sessions) as session:
        row = schedules_db.get(session=session, id=id, lock=True)
        if row is None:
            raise not_found()
        if row.status == schedules_db.ENDED:
            raise Problem(409, "schedule-ended", "This schedule has no occurrence left.")
        wanted = schedules_db.PAUSED if pause else schedules_db.ACTIVE
        if row.status != wanted:
            values = {"status": wanted, "next_at": None} if pause else _restart(now)
            session.execute(
                update(Schedule).where(Schedule.id == id).values(**values, updated_at=now)
            )
            session.refresh(row)
        return public(row, now)


def pause(runtime, id: uuid.UUID) -> SchedulePublic:
    """Stop sending until resumed (again: no change)."""
    return _switch(runtime, id, pause=True)


def resume(runtime, id: uuid.UUID) -> SchedulePublic:
    """Send again from now on; what fell while it was paused is not owed."""
    return _switch(runtime, id, pause=False)


def delete(runtime, id: uuid.UUID) -> None:
    """Delete the schedule; notifications it already sent stay."""
    with transaction(runtime.sessions) as session:
        if not schedules_db.remove(session=session, id=id):
            raise not_found()
