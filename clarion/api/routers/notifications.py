"""Producer endpoints: send, and read a notification's status."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from clarion.api.deps import CoalescerDep, Producer, RuntimeDep, SessionDep
from clarion.api.problems import BROKER_ERRORS, Problem, unavailable
from clarion.api.schemas import AttemptPublic, DeliveryPublic, NotificationStatus
from clarion.core import send
from clarion.core.schemas import NotificationAccepted, NotificationCreate, NotificationPublic
from clarion.db import deliveries, notifications

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.post(
    "",
    status_code=202,
    response_model=NotificationAccepted,
    summary="Send a notification to one or many recipients",
    responses={
        409: {"description": "Idempotency-Key reused with another body, or still in progress"},
        422: {"description": "Invalid request (problem+json); nothing was enqueued"},
        503: {"description": "Broker unreachable; nothing was enqueued. See Retry-After."},
    },
)
def send_notification(
    body: NotificationCreate,
    runtime: RuntimeDep,
    coalescer: CoalescerDep,
    producer: Producer,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Same key + same body within 24 h = same answer."),
    ] = None,
) -> JSONResponse:
    """Validate, enqueue one ``create`` task, and answer 202 with the final ids.

    A 202 means the request is in the broker; the worker persists it shortly after.
    """
    key = f"{producer.key_id}:{idempotency_key}" if idempotency_key else None
    fingerprint = send.fingerprint(body.model_dump(mode="json")) if key else ""
    if key and (replay := _claim(runtime, key, fingerprint)) is not None:
        return replay
    message = send.prepare(body)
    try:
        coalescer.submit(message)
    except BaseException as exc:
        if key:  # nothing was accepted: the key must stay usable for the retry
            runtime.idempotency.release(key)
        if isinstance(exc, BROKER_ERRORS):
            log.warning("broker unreachable; request %s refused", message.request_id)
            raise unavailable("broker") from None
        raise
    answer = send.accepted(message).model_dump(mode="json")
    if key:
        try:
            runtime.idempotency.complete(key, fingerprint, answer)
        except RedisError:
            # Accepted all the same; a retry with this key gets "in progress" (409), never
            # a second send, until the key expires.
            log.warning("could not store the answer for idempotency key of %s", message.request_id)
    return JSONResponse(answer, status_code=202)


def _claim(runtime, key: str, fingerprint: str) -> JSONResponse | None:
    """Claim the Idempotency-Key: None to go on, or the replayed answer; 409 on misuse."""
    try:
        claim = runtime.idempotency.claim(key, fingerprint)
    except RedisError:
        raise unavailable("idempotency store") from None
    if claim.outcome == "replay":
        return JSONResponse(claim.response, 202, headers={"Idempotent-Replayed": "true"})
    if claim.outcome == "mismatch":
        raise Problem(
            409,
            "idempotency-key-reused",
            "This Idempotency-Key was used with a different request body.",
        )
    if claim.outcome == "in_progress":
        raise Problem(
            409,
            "idempotency-key-in-progress",
            "A request with this Idempotency-Key is still being processed.",
            headers={"Retry-After": "1"},
        )
    return None


@router.get(
    "/{notification_id}",
    response_model=NotificationStatus,
    summary="A notification with its deliveries",
    responses={404: {"description": "Unknown id, or not persisted yet"}},
)
def get_notification(
    notification_id: uuid.UUID, session: SessionDep, producer: Producer
) -> NotificationStatus:
    row = notifications.get(session=session, id=notification_id)
    if row is None:
        raise Problem(
            404, "not-found", "No such notification (or the worker has not stored it yet)."
        )
    rows = notifications.deliveries_of(session=session, notification_id=row.id)
    timeline = defaultdict(list)
    for attempt in deliveries.attempts_of(session=session, ids=[d.id for d in rows]):
        timeline[attempt.delivery_id].append(AttemptPublic.model_validate(attempt))
    listed = [
        DeliveryPublic.model_validate(d).model_copy(update={"timeline": timeline[d.id]})
        for d in rows
    ]
    return NotificationStatus.model_validate(
        {
            **NotificationPublic.model_validate(row).model_dump(),
            "request_id": row.request_id,
            "recipient": row.recipient_id,
            "dedupe_key": row.dedupe_key,
            "deleted_at": row.deleted_at,
            "deliveries": listed,
        },
        from_attributes=True,
    )
