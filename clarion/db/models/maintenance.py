"""State of maintenance tasks that outlives one run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from clarion.db.models.base import Base, JSONType, UTCDateTime


class RetentionCursor(Base):
    """Where a retention pass stopped (its time budget ran out), so the next run goes on
    from there instead of walking again the rows it kept (clarion.core.retention)."""

    __tablename__ = "retention_cursors"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The walk's order values of the last row looked at, as text.
    position: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
