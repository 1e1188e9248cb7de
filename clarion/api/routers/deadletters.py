"""The dead-letter queue for operators (admin scope): list, inspect, replay, purge.

Replays and purges are audited with the API key that did them. A bulk replay or purge
needs a filter, or ``all: true``: an empty body never empties the queue by accident.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from clarion.api.deps import Admin, RuntimeDep, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import AttemptPublic
from clarion.core import deadletters
from clarion.core.auth import Principal
from clarion.core.schemas import UTCDateTime
from clarion.core.storable import BigInt, StorableModel
from clarion.db import deliveries
from clarion.db.deliveries import DeadLetterFilter

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
Status = Literal["open", "replayed", "all"]


class DeadLetterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    error: str
    attempts: int
    created_at: UTCDateTime
    replayed_at: UTCDateTime | None
    replayed_by: str | None


class DeadLetterDetail(DeadLetterPublic):
    delivery_status: str
    target: str
    timeline: list[AttemptPublic]


class DeadLetterPage(BaseModel):
    items: list[DeadLetterPublic]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next, older page.")


class Selection(StorableModel):
    """Which dead letters a bulk replay or purge acts on."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"channel": "email", "error_contains": "SMTP 550"}]},
    )

    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error_contains: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    all: bool = Field(default=False, description="Required to act without any filter.")

    def filter(self, status: str) -> DeadLetterFilter:
        if not self.all and not (self.channel or self.since or self.until or self.error_contains):
            raise Problem(
                422, "selection-required", "Give a filter, or `all: true` to act on every one."
            )
        fields = self.model_dump(exclude={"all"})
        return DeadLetterFilter(status=status, **fields)


class Replayed(BaseModel):
    replayed: int
    audit_id: int


class Purged(BaseModel):
    purged: int
    audit_id: int


def _actor(principal: Principal) -> str:
    return f"api-key:{principal.name}#{principal.key_id}"


@router.get("", response_model=DeadLetterPage, summary="List dead letters, newest first")
def list_dead_letters(
    session: SessionDep,
    admin: Admin,
    channel: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    error_contains: Annotated[str | None, Query(max_length=200)] = None,
    status: Status = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: BigInt | None = None,
) -> DeadLetterPage:
    where = DeadLetterFilter(channel, since, until, error_contains, status)
    rows = deliveries.dead_letters(session=session, where=where, limit=limit + 1, before_id=cursor)
    items = [DeadLetterPublic.model_validate(r) for r in rows[:limit]]
    return DeadLetterPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@router.get("/{letter_id}", response_model=DeadLetterDetail, summary="One dead letter")
def get_dead_letter(letter_id: BigInt, session: SessionDep, admin: Admin) -> DeadLetterDetail:
    letter = deliveries.dead_letter(session=session, id=letter_id)
    # The delivery can be purged (with its letter, by cascade) between the two reads.
    delivery = letter and deliveries.get(session=session, id=letter.delivery_id)
    if letter is None or delivery is None:
        raise Problem(404, "not-found", "No such dead letter.")
    timeline = deliveries.attempts_of(session=session, ids=[letter.delivery_id])
    return DeadLetterDetail.model_validate(
        {
            **DeadLetterPublic.model_validate(letter).model_dump(),
            "delivery_status": delivery.status,
            "target": delivery.target,
            "timeline": [AttemptPublic.model_validate(a) for a in timeline],
        }
    )


@router.post("/{letter_id}/replay", response_model=Replayed, summary="Replay one dead letter")
def replay_one(
    letter_id: BigInt, runtime: RuntimeDep, session: SessionDep, admin: Admin
) -> Replayed:
    letter = deliveries.dead_letter(session=session, id=letter_id)
    if letter is None:
        raise Problem(404, "not-found", "No such dead letter.")
    if letter.replayed_at is not None:
        raise Problem(409, "already-replayed", "This dead letter was replayed already.")
    session.rollback()  # the replay runs in its own transaction
    result = deadletters.replay(
        sessions=runtime.sessions,
        settings=runtime.settings,
        scheduler=runtime,
        actor=_actor(admin),
        where=DeadLetterFilter(ids=(letter_id,)),
    )
    return Replayed(**result)


@router.post("/replay", response_model=Replayed, summary="Replay the dead letters a filter selects")
def replay_many(selection: Selection, runtime: RuntimeDep, admin: Admin) -> Replayed:
    result = deadletters.replay(
        sessions=runtime.sessions,
        settings=runtime.settings,
        scheduler=runtime,
        actor=_actor(admin),
        where=selection.filter("open"),
    )
    return Replayed(**result)


@router.delete("/{letter_id}", status_code=204, summary="Purge one dead letter")
def purge_one(letter_id: BigInt, runtime: RuntimeDep, admin: Admin) -> Response:
    one = DeadLetterFilter(ids=(letter_id,), status="all")
    result = deadletters.purge(sessions=runtime.sessions, actor=_actor(admin), where=one)
    if not result["purged"]:
        raise Problem(404, "not-found", "No such dead letter.")
    return Response(status_code=204)


@router.post("/purge", response_model=Purged, summary="Purge the dead letters a filter selects")
def purge_many(selection: Selection, runtime: RuntimeDep, admin: Admin) -> Purged:
    result = deadletters.purge(
        sessions=runtime.sessions, actor=_actor(admin), where=selection.filter("all")
    )
    return Purged(**result)
