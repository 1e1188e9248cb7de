"""Recurring schedules (producer keys): create, list, read, change, pause, resume, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse

from clarion.api import schedules
from clarion.api.deps import Producer, RuntimeDep, SessionDep
from clarion.api.problems import Responses
from clarion.api.schedule_schemas import (
    ScheduleCreate,
    ScheduleFilter,
    SchedulePage,
    SchedulePublic,
    ScheduleUpdate,
)

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
NOT_FOUND: Responses = {404: {"description": "No such schedule (problem+json)"}}
ENDED: Responses = {409: {"description": "The schedule has ended: change its recurrence instead"}}


@router.post(
    "",
    status_code=201,
    response_model=SchedulePublic,
    summary="Create a recurring schedule",
    responses={
        409: {"description": "Idempotency-Key reused with another body, or still in progress"},
        422: {"description": "Invalid body or rule (problem+json); nothing was stored"},
    },
)
def create_schedule(
    body: ScheduleCreate,
    runtime: RuntimeDep,
    producer: Producer,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Same key + same body within 24 h = same answer."),
    ] = None,
) -> JSONResponse:
    """Store it; beat sends each occurrence through the normal pipeline, once per
    recipient (see docs/scheduling/recurring.md)."""
    answer, replayed = schedules.create(runtime, producer, body, idempotency_key)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(answer, status_code=201, headers=headers)


@router.get("", response_model=SchedulePage, summary="Schedules, oldest first")
def list_schedules(
    query: Annotated[ScheduleFilter, Query()], session: SessionDep, producer: Producer
) -> SchedulePage:
    return schedules.listing(session, query)


@router.get(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="A schedule and its next occurrences",
    responses=NOT_FOUND,
)
def get_schedule(schedule_id: uuid.UUID, session: SessionDep, producer: Producer):
    return schedules.get(session, schedule_id)


@router.patch(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="Change a schedule (the fields given)",
    responses={**NOT_FOUND, 422: {"description": "The result would not be a valid schedule"}},
)
def update_schedule(
    schedule_id: uuid.UUID, body: ScheduleUpdate, runtime: RuntimeDep, producer: Producer
) -> SchedulePublic:
    return schedules.update_schedule(runtime, schedule_id, body)


@router.post(
    "/{schedule_id}/pause",
    response_model=SchedulePublic,
    summary="Pause: nothing is sent until it is resumed",
    responses={**NOT_FOUND, **ENDED},
)
def pause_schedule(schedule_id: uuid.UUID, runtime: RuntimeDep, producer: Producer):
    return schedules.pause(runtime, schedule_id)


@router.post(
    "/{schedule_id}/resume",
    response_model=SchedulePublic,
    summary="Resume from now on (what fell while paused is not sent)",
    responses={**NOT_FOUND, **ENDED},
)
def resume_schedule(schedule_id: uuid.UUID, runtime: RuntimeDep, producer: Producer):
    return schedules.resume(runtime, schedule_id)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    summary="Delete a schedule (what it sent stays)",
    responses=NOT_FOUND,
)
def delete_schedule(schedule_id: uuid.UUID, runtime: RuntimeDep, producer: Producer):
    schedules.delete(runtime, schedule_id)
    return Response(status_code=204)
