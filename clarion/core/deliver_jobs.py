"""What a claimed delivery needs to be sent: its channel Message (the notification, the
recipient, the template rendered for the channel) and its target, loaded per claimed chunk."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from clarion import channels as ch
from clarion.core.schemas import NotificationPublic
from clarion.core.templates import Renderer, TemplateError
from clarion.db import deliveries

MAX_ERROR = 2000


def message_of(
    claimed: deliveries.Claimed, notification, subscriber, content: tuple = (None, None)
) -> ch.Message:
    public = NotificationPublic.model_validate(notification).model_dump(mode="json")
    public.update(recipient=notification.recipient_id, collapse_key=notification.collapse_key)
    recipient = {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "locale": subscriber.locale,
        "timezone": subscriber.timezone,
    }
    rendered, error = content
    return ch.Message(
        claimed.id, claimed.attempt, public, recipient, rendered, error, event=claimed.event
    )


def content_of(renderer: Renderer | None, channel: str, notification, subscriber) -> tuple:
    """(rendered content, error) of a notification sent by template, for this channel in
    the recipient's locale; (None, None) for one sent with a title and body."""
    if renderer is None or not notification.template:
        return None, None
    try:
        rendered = renderer.render(
            notification.template,
            channel,
            subscriber.locale,
            notification.template_data,
            share=notification.id,
        )
    except TemplateError as exc:
        return None, f"template {notification.template!r} ({channel}): {exc}"[:MAX_ERROR]
    spec = ch.registry.spec(channel)
    fields = spec.template_fields if spec else ch.registry.TEMPLATE_FIELDS
    # A channel sees the fields it declared (an SMS has no HTML), each possibly None.
    return {k: v for k, v in rendered.as_dict().items() if k in fields}, None


def load_jobs(
    session: Session,
    channel: ch.Channel,
    claimed: list[deliveries.Claimed],
    requests: dict[uuid.UUID, uuid.UUID] | None = None,
) -> list:
    """Claimed deliveries with their message and target; missing ones come back as None.
    ``requests`` gets each notification's send request id (for the log lines)."""
    context = deliveries.contexts(
        session=session, notification_ids={c.notification_id for c in claimed}
    )
    targets = channel.load_targets(session=session, ids={c.target for c in claimed})
    keys = {n.template for n, _ in context.values() if n.template}
    renderer = (
        Renderer(session=session, keys=keys, default_locale=channel.settings.default_locale)
        if keys
        else None
    )
    jobs = []
    for c in claimed:
        found = context.get(c.notification_id)
        if found and requests is not None:
            requests[c.notification_id] = found[0].request_id
        content = content_of(renderer, channel.key, *found) if found else (None, None)
        message = message_of(c, *found, content) if found else None
        jobs.append((c, message, targets.get(c.target)))
    return jobs
