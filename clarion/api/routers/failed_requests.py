"""Requests the worker could not store, for operators (admin scope).

A request whose data the database refused, or that did not validate, is recorded with the
reason instead of being retried or dropped (``clarion.core.failures``); its producer sees
``failed`` at ``GET /v1/requests/{id}`` and ``GET /v1/notifications/{id}``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from clarion.api.deps import Admin, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import FailedRequestDetail, FailedRequestPage, FailedRequestPublic
from clarion.core.storable import BigInt
from clarion.db import failed

router = APIRouter(prefix="/v1/failed-requests", tags=["failed requests"])


@router.get("", response_model=FailedRequestPage, summary="Requests that could not be stored")
def list_failed(
    session: SessionDep,
    admin: Admin,
    producer: Annotated[str | None, Query(max_length=255)] = None,
    kind: Literal["create", "fanout", "event"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: BigInt | None = None,
) -> FailedRequestPage:
    """Newest first, optionally of one producer (``api-key:<name>#<id>``) or kind."""
    rows = failed.page(
        session=session, limit=limit + 1, before_id=cursor, producer=producer, kind=kind
    )
    items = [FailedRequestPublic.model_validate(r) for r in rows[:limit]]
    return FailedRequestPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@router.get(
    "/{request_id}",
    response_model=FailedRequestDetail,
    summary="One failed request, with a copy of it",
    responses={404: {"description": "No such failed request (problem+json)"}},
)
def get_failed(request_id: uuid.UUID, session: SessionDep, admin: Admin) -> FailedRequestDetail:
    row = failed.get(session=session, request_id=request_id)
    if row is None:
        raise Problem(404, "not-found", "No failed request with this id.")
    return FailedRequestDetail.model_validate(row)
