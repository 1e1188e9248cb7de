"""Producer endpoints: send, and read a notification's status."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from clarion.api import idempotent
from clarion.api.deps import Producer, Sender, SessionDep, key_rate
from clarion.api.problems import BROKER_ERRORS, Problem, check_template, unavailable
from clarion.api.ratelimit import DAILY_QUOTA, RateLimiter, note
from clarion.api.schemas import (
    AttemptPublic,
    DeliveryPublic,
    FailedStatus,
    NotificationStatus,
    ScheduledStatus,
)
from clarion.channels import INBOX
from clarion.core import enqueue, schedule
from clarion.core.ratelimits import SLIDING, Check, per_day
from clarion.core.schemas import (
    CreateMessage,
    FanoutMessage,
    NotificationAccepted,
    NotificationCreate,
    NotificationPublic,
)
from clarion.db import deliveries, failed, notifications, scheduled, topics
from clarion.ids import utcnow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.post(
    "",
    status_code=202,
    response_model=NotificationAccepted,
    summary="Send a notification to one or many recipients, or to a topic's subscribers",
    responses={
        409: {"description": "Idempotency-Key reused with another body, or still in progress"},
        422: {"description": "Invalid request (problem+json); nothing was enqueued"},
        503: {"description": "Broker unreachable; nothing was enqueued. See Retry-After."},
    },
)
async def send_notification(
    body: NotificationCreate,
    request: Request,
    producer: Sender,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="Same key + same body within 24 h = same answer."),
    ] = None,
) -> JSONResponse:
    """Validate, enqueue one ``create`` task, and answer 202 with the final ids.

    With ``topic`` instead of ``recipients``, one ``fanout`` task on the bulk lane instead:
    the 202 has no per-recipient ids (the topic's subscribers are in the database, which a
    send does not touch); follow ``progress``. A 202 means the request is in the broker;
    the worker persists it shortly after.
    """
    # The app's state read here, not as dependencies: each costs FastAPI's solving.
    runtime, coalescer = request.app.state.runtime, request.app.state.coalescer
    if idempotency_key is None and body.template is None and body.topic is None:
        # The common send touches neither the database nor the idempotency store: the
        # coalescer counts its limits and publishes it while the loop awaits, no thread.
        message, checks = prepared(runtime, producer, body, counted=True)
        assert isinstance(message, CreateMessage)  # no topic: no fan-out
        try:
            standings = await coalescer.send(message, checks)
        except BROKER_ERRORS:
            raise _refused(message) from None
        return JSONResponse(_accepted(message, request, standings), status_code=202)
    answer, replayed = await run_in_threadpool(
        accept, runtime, coalescer, producer, body, idempotency_key, request
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(answer, status_code=202, headers=headers)


def accept(
    runtime,
    coalescer,
    producer,
    body: NotificationCreate,
    idempotency_key: str | None,
    request: Request | None = None,
) -> tuple[dict, bool]:
    """The send itself, for the API and the MCP tools: the 202 body, and whether it is the
    replay of an earlier request with the same ``Idempotency-Key``.

    With ``request`` (the REST route), the key's request rate is counted here, together
    with its daily quota: one Redis round trip, all or nothing (a send refused by either
    limit counts against neither; the coalescer counts a batch's sends in one). The MCP
    tools counted the rate in ``authorize``."""
    limiter = RateLimiter(runtime.limits)
    rate = [key_rate(runtime, producer)] if request is not None else []
    if body.template is not None:
        try:
            check_template(runtime, body.template, body.data)
        except Problem:
            limiter.check_all(*rate, request=request)  # still a request of the key
            raise

    def make() -> dict:
        message, checks = prepared(runtime, producer, body, counted=request is not None)
        if isinstance(message, FanoutMessage):  # one fan-out task: nothing to coalesce
            limiter.check_all(*checks, request=request)
            try:
                enqueue.enqueue(runtime.celery, message)
            except BROKER_ERRORS:
                raise _refused(message) from None
            return enqueue.accepted(message).model_dump(mode="json")
        try:
            standings = coalescer.submit(message, checks)
        except BROKER_ERRORS:
            raise _refused(message) from None
        return _accepted(message, request, standings)

    dumped = body.model_dump(mode="json")
    answer, replayed = idempotent.once(runtime, producer, idempotency_key, dumped, make)
    if replayed:  # a request all the same, but its recipients are not charged again
        limiter.check_all(*rate, request=request)
    return answer, replayed


def prepared(
    runtime, producer, body: NotificationCreate, counted: bool
) -> tuple[CreateMessage | FanoutMessage, tuple[Check, ...]]:
    """The message to publish and the limits it must pass first: the key's request rate
    (when ``counted``: the REST route's) and its daily quota."""
    rate = [key_rate(runtime, producer)] if counted else []
    checks = (*rate, *quota(runtime, producer, body))
    message = enqueue.prepare(body, producer=f"api-key:{producer.name}#{producer.key_id}")
    return message, checks


def _accepted(message: CreateMessage, request: Request | None, standings) -> dict:
    note(request, standings)
    return enqueue.accepted(message).model_dump(mode="json")


def _refused(message) -> Problem:
    log.warning("broker unreachable; request %s refused", message.request_id)
    return unavailable("broker")


def quota(runtime, producer, body: NotificationCreate) -> list[Check]:
    """The key's daily quota of recipients, charged this send's: its recipients, or a
    topic's subscribers at acceptance (one count query; the fan-out itself may reach a few
    more or fewer). None when the key has no quota."""
    amount = producer.daily_quota
    if amount is None:
        amount = runtime.settings.api_key_daily_quota
    if not amount:
        return []
    if body.topic is not None:
        with runtime.sessions() as session:
            cost = topics.count(session=session, key=body.topic)
    else:
        cost = len(body.recipients or ())
    if not cost:
        return []
    return [Check(per_day(amount), DAILY_QUOTA, (str(producer.key_id),), cost, SLIDING)]


def _not_found() -> Problem:
    return Problem(404, "not-found", "No such notification (or the worker has not stored it yet).")


@router.get(
    "/{notification_id}",
    response_model=NotificationStatus | ScheduledStatus | FailedStatus,
    summary="A notification with its deliveries, or its schedule",
    responses={404: {"description": "Unknown id, or not persisted yet"}},
)
def get_notification(
    notification_id: uuid.UUID, session: SessionDep, producer: Producer
) -> NotificationStatus | ScheduledStatus | FailedStatus:
    """``state`` tells the shapes apart: ``created`` (stored, with its deliveries),
    ``scheduled`` / ``cancelled`` (a future ``send_at``, not stored as a notification yet),
    or ``failed`` (its request could not be stored; ``reason`` says why)."""
    row = notifications.get(session=session, id=notification_id)
    plan = scheduled.get(session=session, id=notification_id)
    failure = failed.of_notification(session=session, id=notification_id) if row is None else None
    if failure is not None:
        return FailedStatus(
            id=notification_id,
            request_id=failure.request_id,
            reason=failure.reason,
            failed_at=failure.created_at,
        )
    if row is None:
        if plan is None:
            raise _not_found()
        return ScheduledStatus.model_validate(
            {
                "state": plan.status,
                "id": plan.id,
                "request_id": plan.request_id,
                "recipient": plan.recipient_id,
                "send_at": plan.send_at,
                "content": plan.message["content"],
                "accepted_at": plan.message["accepted_at"],
                "updated_at": plan.updated_at,
            }
        )
    rows = notifications.deliveries_of(session=session, notification=row, inbox=INBOX)
    timeline = defaultdict(list)
    stored = [d.id for d in rows if d.id is not None]
    for attempt in deliveries.attempts_of(session=session, ids=stored):
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
            "send_at": plan.send_at if plan else None,
            "deleted_at": row.deleted_at,
            "replaced_by": row.replaced_by,
            "deliveries": listed,
        },
        from_attributes=True,
    )


@router.delete(
    "/{notification_id}",
    status_code=204,
    summary="Cancel a scheduled notification",
    responses={
        404: {"description": "Unknown id, or not persisted yet"},
        409: {"description": "Already sent: it was not scheduled, or its send_at has come"},
    },
)
def cancel_notification(notification_id: uuid.UUID, session: SessionDep, producer: Producer):
    """Cancel a notification sent with a future ``send_at`` before the release task sends it.

    Cancelling twice is fine (204 again). Whichever commits first, the cancel or the
    release, wins: a 204 means it will never be delivered, a 409 that it was."""
    with session.begin():
        outcome = schedule.cancel(session=session, id=notification_id, now=utcnow())
    if outcome == schedule.UNKNOWN:
        raise _not_found()
    if outcome == schedule.SENT:
        raise Problem(
            409, "already-sent", "This notification was already sent; it cannot be cancelled."
        )
    return Response(status_code=204)
