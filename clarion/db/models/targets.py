"""Channel targets a subscriber or producer registers: push subscriptions, webhook endpoints,
subscriber addresses (chat URLs, phone numbers)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from clarion.db.models.base import Base, JSONType, UTCDateTime


class PushSubscription(Base):
    """One browser or device of a subscriber (the W3C PushSubscription it registered)."""

    __tablename__ = "push_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    endpoint: Mapped[str] = mapped_column(String(2048), nullable=False, unique=True)
    p256dh: Mapped[str] = mapped_column(String(128), nullable=False)
    auth: Mapped[str] = mapped_column(String(64), nullable=False)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Set when the push service says the subscription is gone (404/410).
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """A producer's receiver: signed POSTs of the notifications in its categories."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    # Standard Webhooks secret ("whsec_" + base64). Kept readable: signing needs it.
    secret: Mapped[str] = mapped_column(String(128), nullable=False)
    # Empty: every category.
    categories: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class SubscriberAddress(Base):
    """A subscriber's address on a channel that needs one (a chat URL, a phone number).

    ``sealed`` is the address encrypted by the channel (clarion.channels.addresses); only
    ``display``, a masked form, is ever shown back.
    """

    __tablename__ = "subscriber_addresses"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "channel", name="uq_subscriber_addresses_channel"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    )
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    sealed: Mapped[str] = mapped_column(Text, nullable=False)
    display: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
