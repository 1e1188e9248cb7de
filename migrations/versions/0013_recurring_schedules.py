"""Recurring schedules, and subscribers indexed by time zone.

- ``schedules``: one row per recurring schedule (``/v1/schedules``); beat finds the due
  ones through ``ix_schedules_due`` (partial: only rows with a ``next_at``).
- ``ix_subscribers_timezone`` (timezone, id): a schedule on each recipient's own clock
  groups its recipients by zone, and a zone's batch reads that zone's recipients.

Revision ID: 0013
Revises: 0006
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("recipients", JSON),
        sa.Column("topic", sa.String(128)),
        sa.Column("content", JSON, nullable=False),
        sa.Column("rrule", sa.Text, nullable=False),
        sa.Column("every", sa.String(100)),
        sa.Column("dtstart", sa.String(19), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("fallback_timezone", sa.String(64), nullable=False),
        sa.Column("catch_up", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("anchor_at", TS, nullable=False),
        sa.Column("next_at", TS),
        sa.Column("zones", JSON),
        sa.Column("probed_through", sa.String(19)),
        sa.Column("last_sent_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_at"],
        postgresql_where=sa.text("next_at IS NOT NULL"),
        sqlite_where=sa.text("next_at IS NOT NULL"),
    )
    op.create_index("ix_schedules_topic", "schedules", ["topic"])
    op.create_index("ix_subscribers_timezone", "subscribers", ["timezone", "id"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_timezone", table_name="subscribers")
    op.drop_table("schedules")
