"""Rule engine: events, rule settings (operator overrides), rule runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(255)),
        sa.Column("actor", sa.String(255)),
        sa.Column("data", JSON, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_index("ix_events_type_time", "events", ["type", "occurred_at"])
    op.create_table(
        "rule_settings",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("enabled", sa.Boolean),
        sa.Column("config", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "rule_runs",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("rule_key", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("candidates", sa.Integer, nullable=False),
        sa.Column("created", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("event_id", sa.Uuid),
    )
    op.create_index("ix_rule_runs_key", "rule_runs", ["rule_key", sa.text("id DESC")])


def downgrade() -> None:
    op.drop_table("rule_runs")
    op.drop_table("rule_settings")
    op.drop_table("events")
