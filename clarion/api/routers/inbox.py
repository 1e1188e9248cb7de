"""The end user's inbox: list, count, mark read/archived, read all, delete.

Authenticated by a user token; every query is scoped to the token's subscriber, so another
user's notification is a 404 (never a 403, never data).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy.orm import Session

from clarion.api.deps import CurrentSubscriber, RuntimeDep, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import (
    InboxPage,
    NotificationPatch,
    ReadAll,
    ReadAllResult,
    UnreadCount,
)
from clarion.core import inbox
from clarion.core.schemas import NotificationPublic, Severity
from clarion.db import notifications
from clarion.db.notifications import InboxFilter
from clarion.ids import utcnow
from clarion.runtime import Runtime

router = APIRouter(prefix="/v1/me/notifications", tags=["inbox"])
NOT_FOUND = Problem(404, "not-found", "No such notification.")


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
    status: Literal["unread", "read", "all"] = "all",
    archived: bool = False,
) -> InboxPage:
    rows = notifications.inbox(
        session=session,
        recipient_id=me,
        limit=limit + 1,
        before=cursor,
        filters=InboxFilter(category=category, severity=severity, status=status, archived=archived),
    )
    page = rows[:limit]
    return InboxPage(
        items=[NotificationPublic.model_validate(r) for r in page],
        next_cursor=str(page[-1].id) if len(rows) > limit else None,
    )


@router.get("/unread-count", response_model=UnreadCount, summary="Unread count for the bell")
def unread_count(session: SessionDep, me: CurrentSubscriber) -> UnreadCount:
    counts = notifications.unread_counts(session=session, recipient_id=me)
    return UnreadCount(total=sum(counts.values()), by_category=counts)


def _announce(runtime: Runtime, session: Session, me: str, event: dict | None) -> None:
    """After commit: the change and the new unread count, to every tab of this user."""
    if event is None:
        return
    unread = inbox.unread_event(session=session, recipient_id=me, cursor=event["cursor"])
    runtime.pubsub.publish_many([event, unread])


@router.patch("/{notification_id}", response_model=NotificationPublic, summary="Mark read/archived")
def patch_notification(
    notification_id: uuid.UUID,
    body: NotificationPatch,
    session: SessionDep,
    runtime: RuntimeDep,
    me: CurrentSubscriber,
) -> NotificationPublic:
    with session.begin():
        found = inbox.set_flags(
            session=session,
            recipient_id=me,
            id=notification_id,
            read=body.read,
            archived=body.archived,
            now=utcnow(),
        )
        if found is None:
            raise NOT_FOUND
        row, event = found
        public = NotificationPublic.model_validate(row)
    _announce(runtime, session, me, event)
    return public


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
