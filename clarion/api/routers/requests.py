"""A send's progress under its request id (the ``progress`` link of every 202)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from clarion.api.deps import Producer, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import RequestProgress
from clarion.db import failed, topics

router = APIRouter(prefix="/v1/requests", tags=["notifications"])


@router.get(
    "/{request_id}",
    response_model=RequestProgress,
    summary="How far a send has come (fan-out progress for a topic)",
    responses={404: {"description": "Unknown id, or the worker has not started on it yet"}},
)
def get_request(request_id: uuid.UUID, session: SessionDep, producer: Producer) -> RequestProgress:
    """A topic send reports its fan-out; any other send is stored in one transaction, so
    it is either not there yet (404) or complete. A request the worker could not store
    says ``failed``, with the reason."""
    created = topics.created_count(session=session, request_id=request_id)
    fanout = topics.get_fanout(session=session, request_id=request_id)
    failure = failed.get(session=session, request_id=request_id)
    if failure is not None:
        return RequestProgress(
            request_id=request_id,
            topic=fanout.topic if fanout else None,
            status="failed",
            total=fanout.total if fanout else None,
            batches=fanout.batches if fanout else None,
            created=created,
            done=True,
            reason=failure.reason,
        )
    if fanout is not None:
        return RequestProgress(
            request_id=request_id,
            topic=fanout.topic,
            status=fanout.status,
            total=fanout.total,
            batches=fanout.batches,
            created=created,
            done=fanout.status == topics.ENQUEUED and created >= fanout.total,
        )
    if created == 0:
        raise Problem(
            404, "not-found", "No such request (or the worker has not started on it yet)."
        )
    return RequestProgress(
        request_id=request_id,
        topic=None,
        status="created",
        total=None,
        batches=None,
        created=created,
        done=True,
    )
