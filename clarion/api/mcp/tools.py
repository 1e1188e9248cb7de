"""The MCP tools: input models, descriptions, and what each calls.

Every input schema is generated from the REST API's own pydantic models (a tool's model
subclasses or wraps the request model of the matching endpoint), and every tool calls the
same function the REST route calls, after the same scope check
(:func:`clarion.api.deps.authorize`). So an agent can do exactly what its key can do over
REST, with the same validation, errors and idempotency.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from clarion.api import schedules
from clarion.api.problems import Problem
from clarion.api.routers import notifications, subscribers, templates
from clarion.api.schedule_schemas import Name, ScheduleCreate, ScheduleFilter
from clarion.api.schemas import RecentQuery
from clarion.core.auth import Principal
from clarion.core.recurrence import Recurrence
from clarion.core.schemas import Key, NotificationCreate, SubscriberId


class ScheduleNotification(NotificationCreate):
    """``POST /v1/notifications`` (immediate, or at ``send_at``), or with ``recurrence``
    ``POST /v1/schedules``: the same fields, the same checks."""

    model_config = ConfigDict(extra="forbid")

    recurrence: Recurrence | None = Field(
        default=None,
        description="Repeat it: e.g. {'every': 'weekdays at 09:00', 'timezone': "
        "'subscriber'}. Leave out for a one-off.",
    )
    name: Name | None = Field(default=None, description="A label for a recurring schedule.")
    idempotency_key: str | None = Field(
        default=None,
        max_length=255,
        description="Retrying with the same key and the same arguments creates nothing new "
        "and returns the first answer.",
    )


class NotificationRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(description="A notification id, or a recurring schedule's id.")


class RecentNotifications(RecentQuery):
    subscriber_id: SubscriberId = Field(description="Whose notifications, e.g. 'user-42'.")


class PreviewTemplate(templates.PreviewRequest):
    key: Key = Field(description="The template key, from the clarion://templates resource.")


@dataclass(frozen=True)
class Call:
    """What a tool runs with: the process's runtime, how sends are published, the caller."""

    runtime: Any
    submitter: Any  # has .submit(CreateMessage), like the API's coalescer
    principal: Principal

    def session(self) -> Session:
        return self.runtime.sessions()


def schedule_notification(call: Call, args: ScheduleNotification) -> dict[str, Any]:
    fields = args.model_dump(exclude={"recurrence", "name", "idempotency_key"}, exclude_unset=True)
    if args.recurrence is not None:
        body = ScheduleCreate.model_validate(
            {**fields, "recurrence": args.recurrence, "name": args.name}
        )
        answer, replayed = schedules.create(
            call.runtime, call.principal, body, args.idempotency_key
        )
        return {"schedule": answer, "replayed": replayed}
    if args.name is not None:
        raise Problem(422, "validation-error", "name goes with recurrence (a schedule).")
    request = NotificationCreate.model_validate(fields)
    answer, replayed = notifications.accept(
        call.runtime, call.submitter, call.principal, request, args.idempotency_key
    )
    return {"accepted": answer, "replayed": replayed}


def cancel_notification(call: Call, args: NotificationRef) -> dict[str, Any]:
    with call.session() as session:
        is_schedule = schedules.schedules_db.get(session=session, id=args.id) is not None
    if is_schedule:
        schedules.delete(call.runtime, args.id)
        return {"id": str(args.id), "deleted": "schedule"}
    with call.session() as session:
        notifications.cancel_notification(args.id, session, call.principal)
    return {"id": str(args.id), "cancelled": "notification"}


def list_schedules(call: Call, args: ScheduleFilter) -> dict[str, Any]:
    with call.session() as session:
        return schedules.listing(session, args).model_dump(mode="json")


def get_notification_status(call: Call, args: NotificationRef) -> dict[str, Any]:
    with call.session() as session:
        try:
            status = notifications.get_notification(args.id, session, call.principal)
        except Problem as exc:
            if exc.status != 404:
                raise
            return {"schedule": schedules.get(session, args.id).model_dump(mode="json")}
        return {"notification": status.model_dump(mode="json")}


def list_recent_notifications(call: Call, args: RecentNotifications) -> dict[str, Any]:
    query = RecentQuery.model_validate(args.model_dump(exclude={"subscriber_id"}))
    with call.session() as session:
        page = subscribers.recent_notifications(session, args.subscriber_id, query)
    return page.model_dump(mode="json")


def preview_template(call: Call, args: PreviewTemplate) -> dict[str, Any]:
    body = templates.PreviewRequest.model_validate(args.model_dump(exclude={"key"}))
    with call.session() as session:
        shown = templates.preview(args.key, body, call.runtime, session, call.principal)
    return shown.model_dump(mode="json")


@dataclass(frozen=True)
class Tool:
    name: str
    model: type[BaseModel]
    scope: str
    read_only: bool
    run: Callable[[Call, Any], dict[str, Any]]
    description: str


TOOLS = {
    t.name: t
    for t in (
        Tool(
            "schedule_notification",
            ScheduleNotification,
            "notify",
            False,
            schedule_notification,
            "Send a notification to people (subscriber ids) or to every subscriber of a "
            "topic: now, at a time (send_at, ISO 8601 with offset), or again and again "
            "(recurrence). Give title (and body) or a template key with data. Examples: "
            "remind user-42 every weekday at 9:00 their time = {recipients: ['user-42'], "
            "category: 'reminders', title: 'Daily standup', recurrence: {every: 'weekdays "
            "at 09:00', timezone: 'subscriber'}}; tell the 'beta-testers' topic now = "
            "{topic: 'beta-testers', category: 'news', title: 'v2 is out'}; remind ada "
            "tomorrow at 08:30 UTC = {recipients: ['ada'], category: 'reminders', title: "
            "'Call the bank', send_at: '2025-06-03T08:30:00Z'}. Returns the notification "
            "ids (or the schedule with its next occurrences). Pass idempotency_key when "
            "you might retry.",
        ),
        Tool(
            "cancel_notification",
            NotificationRef,
            "notify",
            False,
            cancel_notification,
            "Cancel what schedule_notification created, by its id: a notification with a "
            "future send_at is never delivered, a recurring schedule is deleted (what it "
            "already sent stays). Fails with already-sent once a one-off was delivered.",
        ),
        Tool(
            "list_schedules",
            ScheduleFilter,
            "notify",
            True,
            list_schedules,
            "List recurring schedules with their next occurrences, oldest first; filter by "
            "status (active, paused, ended) or topic; page with cursor = next_cursor.",
        ),
        Tool(
            "get_notification_status",
            NotificationRef,
            "notify",
            True,
            get_notification_status,
            "What happened to a notification, by the id schedule_notification returned: "
            "scheduled, cancelled, or created with each channel's delivery (sent, failed, "
            "deferred by quiet hours, held for a digest) and its attempts. Given a "
            "schedule's id, returns the schedule.",
        ),
        Tool(
            "list_recent_notifications",
            RecentNotifications,
            "notify",
            True,
            list_recent_notifications,
            "Read a subscriber's recent notifications, newest first, as their inbox shows "
            "them (read-only: nothing is marked read). Example: {subscriber_id: 'user-42', "
            "status: 'unread', limit: 5}.",
        ),
        Tool(
            "preview_template",
            PreviewTemplate,
            "admin",
            True,
            preview_template,
            "Render a stored template with sample data, as a recipient in a locale would "
            "get it on a channel, without sending anything; reports a missing variable "
            "with where it is. Example: {key: 'order_shipped', channel: 'email', locale: "
            "'en', data: {order: 'A-17'}}. Needs an admin key.",
        ),
    )
}
