"""Routing: preferences (quiet hours, digest cadence), stored templates, scheduled sends,
expiry, collapse, digests, topics and fan-out progress.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
OPEN = "status IN ('pending', 'sending', 'failed', 'deferred')"
HELD = "status = 'held'"


def _partial(condition: str) -> dict:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("quiet_hours_start", sa.String(5)))
        batch.add_column(sa.Column("quiet_hours_end", sa.String(5)))
    op.create_table(
        "category_preferences",
        sa.Column(
            "subscriber_id",
            sa.String(255),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("category", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(16), nullable=False),
        sa.Column("digest_at", sa.String(5)),
        sa.Column("digest_weekday", sa.Integer),
        sa.Column("updated_at", TS, nullable=False),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(
            sa.Column("in_inbox", sa.Boolean, server_default=sa.true(), nullable=False)
        )
        batch.add_column(sa.Column("expires_at", TS))
        batch.add_column(sa.Column("template", sa.String(128)))
        batch.add_column(sa.Column("template_data", JSON))
        batch.add_column(sa.Column("replaced_by", sa.Uuid))
    op.create_index("ix_notifications_request", "notifications", ["request_id"])
    op.create_index(
        "ix_notifications_collapse",
        "notifications",
        ["recipient_id", "collapse_key"],
        **_partial("collapse_key IS NOT NULL AND deleted_at IS NULL"),
    )
    op.drop_index("ix_deliveries_due", "deliveries")
    op.create_index(
        "ix_deliveries_due", "deliveries", ["status", "next_attempt_at"], **_partial(OPEN)
    )
    op.create_index("ix_deliveries_held", "deliveries", ["next_attempt_at"], **_partial(HELD))
    op.create_table(
        "templates",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("html", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("key", "channel", "locale", "version", name="uq_templates_version"),
    )
    op.create_index(
        "uq_templates_active",
        "templates",
        ["key", "channel", "locale"],
        unique=True,
        **_partial("active"),
    )
    op.create_table(
        "scheduled_notifications",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("request_id", sa.Uuid, nullable=False),
        sa.Column("recipient_id", sa.String(255), nullable=False),
        sa.Column("send_at", TS, nullable=False),
        sa.Column("message", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(
        "ix_scheduled_due",
        "scheduled_notifications",
        ["send_at"],
        **_partial("status = 'scheduled'"),
    )
    op.create_index(
        "ix_scheduled_notifications_request_id", "scheduled_notifications", ["request_id"]
    )
    op.create_table(
        "topics",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "topic_subscribers",
        sa.Column(
            "topic_key",
            sa.String(128),
            sa.ForeignKey("topics.key", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "subscriber_id",
            sa.String(255),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_topic_subscribers_subscriber_id", "topic_subscribers", ["subscriber_id"])
    op.create_table(
        "fanouts",
        sa.Column("request_id", sa.Uuid, primary_key=True),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("batches", sa.Integer, nullable=False),
        sa.Column("message", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
    )


def downgrade() -> None:
    for table in (
        "fanouts",
        "topic_subscribers",
        "topics",
        "scheduled_notifications",
        "templates",
        "category_preferences",
    ):
        op.drop_table(table)
    op.drop_index("ix_deliveries_held", "deliveries")
    op.drop_index("ix_deliveries_due", "deliveries")
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["status", "next_attempt_at"],
        **_partial("status IN ('pending', 'sending', 'failed')"),
    )
    op.drop_index("ix_notifications_collapse", "notifications")
    op.drop_index("ix_notifications_request", "notifications")
    with op.batch_alter_table("notifications") as batch:
        for column in ("replaced_by", "template_data", "template", "expires_at", "in_inbox"):
            batch.drop_column(column)
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("quiet_hours_end")
        batch.drop_column("quiet_hours_start")
