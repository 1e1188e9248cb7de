"""Recurring schedules: one row per schedule, whatever the number of recipients."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.db.models.base import Base, JSONType, UTCDateTime


class Schedule(Base):
    """A notification sent again and again by an RRULE (``/v1/schedules``).

    Beat looks at a schedule only when ``next_at`` has come, so its work per tick follows
    the schedules due, not the recipients. ``zones`` holds, per time zone among the
    recipients (the zone name; "" for recipients without one, read on
    ``fallback_timezone``), the last occurrence sent or skipped there, as a local time.
    """

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    # One of the two: a list of subscriber ids, or a topic key.
    recipients: Mapped[list[str] | None] = mapped_column(JSONType)
    topic: Mapped[str | None] = mapped_column(String(128))
    # NotificationContent as JSON: what each occurrence says.
    content: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # The RRULE body (shorthand expanded), and its floating DTSTART (local, ISO).
    rrule: Mapped[str] = mapped_column(Text, nullable=False)
    every: Mapped[str | None] = mapped_column(String(100))
    dtstart: Mapped[str] = mapped_column(String(19), nullable=False)
    # "subscriber" (each recipient's own zone) or an IANA zone.
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    fallback_timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    catch_up: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # active | paused | ended (no occurrence left)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # Occurrences at or before this instant are never owed (created, resumed, rescheduled).
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # When beat must look at it next; NULL when paused or ended.
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {zone: last local occurrence handled, or null}; NULL until beat first looks.
    zones: Mapped[dict[str, str | None] | None] = mapped_column(JSONType)
    # With timezone "subscriber": the last floating occurrence whose audience was grouped.
    probed_through: Mapped[str | None] = mapped_column(String(19))
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index(
            "ix_schedules_due",
            "next_at",
            postgresql_where=text("next_at IS NOT NULL"),
            sqlite_where=text("next_at IS NOT NULL"),
        ),
        Index("ix_schedules_topic", "topic"),
    )
