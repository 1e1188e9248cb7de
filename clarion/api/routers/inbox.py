"""The end user's inbox: list, get, count, mark read/seen/archived, snooze, read all,
delete, action clicks and the test notification.

Authenticated by a user token; every query is scoped to the token's subscriber, so another
user's notification is a 404 (never a 403, never data). Every change is published after
commit with the new counts, so the user's other tabs follow (clarion.core.inbox).
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from sqlalchemy.orm import Session

from clarion.api.deps import (
    CoalescerDep,
    CurrentSubscriber,
    NotificationCaller,
    RuntimeDep,
    SessionDep,
)
from clarion.api.problems import BROKER_ERRORS, Problem, unavailable
from clarion.api.ratelimit import LimiterDep
from clarion.api.schemas import (
    ActionClicked,
    InboxPage,
    NotificationPatch,
    ReadAll,
    ReadAllResult,
    SeenRequest,
    TestRequest,
    TestSent,
    UnreadCount,
)
from clarion.core import actions, inbox, trial
from clarion.core.schemas import NotificationPublic, Severity
from clarion.db import recipient_inbox
from clarion.db.recipient_inbox import InboxFilter
from clarion.ids import utcnow
from clarion.runtime import Runtime

router = APIRouter(prefix="/v1/me/notifications", tags=["inbox"])
NOT_FOUND = Problem(404, "not-found", "No such notification.")
log = logging.getLogger(__name__)


@router.get("", response_model=InboxPage, summary="My notifications, newest first")
def list_notifications(
    session: SessionDep,
    me: CurrentSubscriber,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        uuid.UUID | None, Query(description="next_cursor of the previous page")
    ] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    severity: Severity | None = None,
    status: Literal["unread", "read", "unseen", "all"] = "all",
    archived: bool = False,
    snoozed: Annotated[
        bool, Query(description="true: only the snoozed ones (hidden otherwise)")
    ] = False,
) -> InboxPage:
    filters = InboxFilter(
        category=category, severity=severity, status=status, archived=archived, snoozed=snoozed
    )
    rows = recipient_inbox.page(
        session=session, recipient_id=me, limit=limit + 1, before=cursor, filters=filters
    )
    page = rows[:limit]
    return InboxPage(
        items=[NotificationPublic.model_validate(r) for r in page],
        next_cursor=str(page[-1].id) if len(rows) > limit else None,
    )


@router.get("/unread-count", response_model=UnreadCount, summary="Unread and unseen, for the bell")
def unread_count(session: SessionDep, me: CurrentSubscriber) -> UnreadCount:
    counts = recipient_inbox.unread_counts(session=session, recipient_id=me)
    return UnreadCount.model_validate(inbox.counts_data(counts))


def _announce(runtime: Runtime, session: Session, me: str, event: dict | None) -> None:
    """After commit: the change and the new counts, to every tab of this user."""
    if event is None:
        return
    unread = inbox.unread_event(session=session, recipient_id=me, cursor=event["cursor"])
    runtime.pubsub.publish_many([event, unread])


@router.post("/seen", response_model=ReadAllResult, summary="Mark seen: ids, or up to a cursor")
def mark_seen(
    body: SeenRequest, session: SessionDep, runtime: RuntimeDep, me: CurrentSubscriber
) -> ReadAllResult:
    """``updated`` counts the ones that were unseen (and unread) until now."""
    with session.begin():
        updated, event = inbox.mark_seen(
            session=session, recipient_id=me, ids=body.ids, up_to=body.up_to, now=utcnow()
        )
    _announce(runtime, session, me, event)
    return ReadAllResult(updated=updated)


@router.post("/read-all", response_model=ReadAllResult, summary="Mark all (or one category) read")
def read_all(
    session: SessionDep,
    runtime: RuntimeDep,
    me: CurrentSubscriber,
    body: Annotated[ReadAll | None, Body()] = None,
) -> ReadAllResult:
    with session.begin():
        updated, event = inbox.read_all(
            session=session,
            recipient_id=me,
            category=body.category if body else None,
            now=utcnow(),
        )
    _announce(runtime, session, me, event)
    return ReadAllResult(updated=updated)


@router.post("/delete-read", response_model=ReadAllResult, summary="Delete the read ones")
def delete_read(
    session: SessionDep,
    runtime: RuntimeDep,
    me: CurrentSubscriber,
    body: Annotated[ReadAll | None, Body()] = None,
) -> ReadAllResult:
    """Deletes the read notifications the inbox shows (of one category, if given); archived
    and snoozed ones are kept."""
    with session.begin():
        updated, event = inbox.delete_read(
            session=session,
            recipient_id=me,
            category=body.category if body else None,
            now=utcnow(),
        )
    _announce(runtime, session, me, event)
    return ReadAllResult(updated=updated)


@router.post(
    "/test",
    status_code=202,
    response_model=TestSent,
    summary="Send myself a test notification",
    responses={
        422: {"description": "no-target or channel-disabled: it could not reach you there"},
        429: {"description": "Too many tests: see Retry-After"},
    },
)
def send_test(
    body: TestRequest,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    coalescer: CoalescerDep,
    limiter: LimiterDep,
    me: CurrentSubscriber,
) -> TestSent:
    """A real notification to me on one channel (or each of mine, ``all``), rate-limited
    per user (``CLARION_TEST_NOTIFICATION_RATE_LIMIT``)."""
    limit = runtime.settings.test_notification_rate_limit
    limiter.check(limit, "test-notification", me, request=request)
    wanted = list(trial.CHANNELS) if body.channel == "all" else [body.channel]
    usable, refused = trial.check(
        session=session, channels=runtime.channels, recipient_id=me, wanted=wanted
    )
    session.rollback()  # read only: do not hold a transaction while publishing
    if not usable:
        channel, slug = next(iter(refused.items()))
        detail = {
            trial.NO_TARGET: f"You have nowhere to receive {channel} notifications yet.",
            trial.DISABLED: f"The {channel} channel is switched off.",
        }[slug]
        raise Problem(422, slug, detail, channel=channel)
    message = trial.message(me, usable)
    try:
        coalescer.submit(message)
    except BROKER_ERRORS:
        raise unavailable("broker") from None
    return TestSent(request_id=message.request_id, channels=usable, skipped=refused)


@router.get("/{notification_id}", response_model=NotificationPublic, summary="One notification")
def get_notification(
    notification_id: uuid.UUID, session: SessionDep, me: CurrentSubscriber
) -> NotificationPublic:
    row = recipient_inbox.get_for_recipient(session=session, recipient_id=me, id=notification_id)
    if row is None:
        raise NOT_FOUND
    return NotificationPublic.model_validate(row)


@router.patch(
    "/{notification_id}",
    response_model=NotificationPublic,
    summary="Mark read/unread, seen, archived; snooze",
)
def patch_notification(
    notification_id: uuid.UUID,
    body: NotificationPatch,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: NotificationCaller,
) -> NotificationPublic:
    """With the token of a push of this notification (the service worker), only
    ``{"read": true}``."""
    if caller.push and body.model_dump(exclude_unset=True) != {"read": True}:
        raise Problem(403, "forbidden", "A push's token may only mark its notification read.")
    me = caller.subscriber
    unsnooze = "snoozed_until" in body.model_fields_set and body.snoozed_until is None
    change = inbox.Change(
        read=body.read,
        archived=body.archived,
        seen=body.seen,
        snooze=body.snoozed_until,
        unsnooze=unsnooze,
    )
    with session.begin():
        found = inbox.set_flags(
            session=session, recipient_id=me, id=notification_id, change=change, now=utcnow()
        )
        if found is None:
            raise NOT_FOUND
        row, event = found
        public = NotificationPublic.model_validate(row)
    _announce(runtime, session, me, event)
    return public


@router.post(
    "/{notification_id}/actions/{action_id}",
    response_model=ActionClicked,
    summary="Click an action",
    responses={404: {"description": "Unknown notification or action"}},
)
def click_action(
    notification_id: uuid.UUID,
    action_id: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    runtime: RuntimeDep,
    caller: NotificationCaller,
) -> ActionClicked:
    """Records the click (``clicked_at``; a ``notification.action`` webhook event the first
    time) and marks the notification read; answers the URL to open. The token of a push of
    this notification works too (the service worker's)."""
    me = caller.subscriber
    try:
        with session.begin():
            clicked = actions.click(
                session=session,
                channels=runtime.channels,
                settings=runtime.settings,
                recipient_id=me,
                id=notification_id,
                action_id=action_id,
                now=utcnow(),
            )
            if clicked is None:
                raise NOT_FOUND
    except actions.UnknownAction:
        raise Problem(404, "not-found", "This notification has no such action.") from None
    if clicked.webhook_deliveries:
        try:
            runtime.deliver(actions.WEBHOOK, clicked.webhook_deliveries, lane=clicked.lane)
        except BROKER_ERRORS:  # stored as pending: the sweeper dispatches them later
            log.warning("broker unreachable; the click's webhook events wait for the sweeper")
    _announce(runtime, session, me, clicked.event)
    return ActionClicked(url=clicked.url)


@router.delete("/{notification_id}", status_code=204, summary="Delete from my inbox")
def delete_notification(
    notification_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, me: CurrentSubscriber
) -> Response:
    with session.begin():
        event = inbox.delete(session=session, recipient_id=me, id=notification_id, now=utcnow())
        if event is None:
            raise NOT_FOUND
    _announce(runtime, session, me, event)
    return Response(status_code=204)
