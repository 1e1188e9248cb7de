"""Routing: preferences, stored templates, scheduled sends, topics and fan-outs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy import text as sql_text  # Template has a column named "text"
from sqlalchemy.orm import Mapped, mapped_column

from clarion.db.models.base import Base, BigIntPK, JSONType, UTCDateTime


class Preference(Base):
    """A subscriber's switch for one channel in one category ("*" = every category)."""

    __tablename__ = "preferences"

    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class CategoryPreference(Base):
    """A subscriber's digest cadence for one category: instant, hourly, daily, weekly."""

    __tablename__ = "category_preferences"

    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(16), nullable=False)
    # "HH:MM" in the subscriber's timezone (daily and weekly); weekday 0 = Monday (weekly).
    digest_at: Mapped[str | None] = mapped_column(String(5))
    digest_weekday: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Template(Base):
    """One version of a stored template for one key, channel ("*" = any) and locale.

    Versions are kept; exactly one per (key, channel, locale) is active (a partial unique
    index), and it is the one rendered.
    """

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    locale: Mapped[str] = mapped_column(String(35), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # Email subject, push and in-app title.
    subject: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    # Plain-text email part, push and in-app body.
    text: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)

    __table_args__ = (
        UniqueConstraint("key", "channel", "locale", "version", name="uq_templates_version"),
        Index(
            "uq_templates_active",
            "key",
            "channel",
            "locale",
            unique=True,
            postgresql_where=sql_text("active"),
            sqlite_where=sql_text("active"),
        ),
    )


class ScheduledNotification(Base):
    """A notification accepted with a future ``send_at``: released by beat, cancellable.

    It becomes a notification (with its sequence number) only when released, so a live
    client's cursor never skips it.
    """

    __tablename__ = "scheduled_notifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    recipient_id: Mapped[str] = mapped_column(String(255), nullable=False)
    send_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The create message (content, accepted_at) to release.
    message: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # scheduled | released | cancelled
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index(
            "ix_scheduled_due",
            "send_at",
            postgresql_where=text("status = 'scheduled'"),
            sqlite_where=text("status = 'scheduled'"),
        ),
    )


class Topic(Base):
    """A named audience (``PUT /v1/topics/{key}/subscribers``)."""

    __tablename__ = "topics"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class TopicSubscriber(Base):
    __tablename__ = "topic_subscribers"

    topic_key: Mapped[str] = mapped_column(
        ForeignKey("topics.key", ondelete="CASCADE"), primary_key=True
    )
    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Fanout(Base):
    """A ``POST /v1/notifications`` to a topic: its progress, under the request id."""

    __tablename__ = "fanouts"

    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    topic: Mapped[str] = mapped_column(String(128), nullable=False)
    # fanning_out | enqueued (every batch's create task is on the bulk lane)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    batches: Mapped[int] = mapped_column(Integer, nullable=False)
    message: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
