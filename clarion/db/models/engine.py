"""The rule engine: producer events, operator overrides, rule runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from clarion.db.models.base import Base, BigIntPK, JSONType, UTCDateTime


class Event(Base):
    """A producer's domain event (``POST /v1/events``), input of the event rules."""

    __tablename__ = "events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(128), nullable=False)
    subject: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_events_type_time", "type", "occurred_at"),
        # Retention walks events by age (clarion.core.retention).
        Index("ix_events_received", "received_at"),
    )


class RuleSetting(Base):
    """An operator's override of a rule: on/off and config, changed without a deploy."""

    __tablename__ = "rule_settings"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    enabled: Mapped[bool | None] = mapped_column(Boolean)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_by: Mapped[str] = mapped_column(String(255), nullable=False)


class RuleRun(Base):
    """One run of one rule: what it saw, what it created, what it skipped, how it ended."""

    __tablename__ = "rule_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    rule_key: Mapped[str] = mapped_column(String(128), nullable=False)
    # beat | manual | event | dry-run
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The rule's clock: "now" as the rule saw it (differs from started_at in time travel).
    as_of: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    candidates: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    created: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    duplicates: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    __table_args__ = (Index("ix_rule_runs_key", "rule_key", text("id DESC")),)
