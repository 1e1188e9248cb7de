"""Channels and reliable delivery: delivery targets and timeline, dead letters, audit log,
preferences, push subscriptions, webhook endpoints, collapse keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("notifications", sa.Column("collapse_key", sa.String(255)))
    # batch mode: SQLite cannot alter constraints in place (PostgreSQL alters as usual).
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("target", sa.String(64), server_default="", nullable=False))
        batch.drop_constraint("uq_deliveries_channel", type_="unique")
        batch.create_unique_constraint(
            "uq_deliveries_target", ["notification_id", "channel", "target"]
        )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            sa.Uuid,
            sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("provider_ref", sa.String(255)),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])
    op.create_table(
        "dead_letters",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            sa.Uuid,
            sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("notification_id", sa.Uuid, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("replayed_at", TS),
        sa.Column("replayed_by", sa.String(255)),
    )
    op.create_index("ix_dead_letters_delivery_id", "dead_letters", ["delivery_id"])
    op.create_index("ix_dead_letters_open", "dead_letters", ["channel", "created_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "preferences",
        sa.Column(
            "subscriber_id",
            sa.String(255),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("category", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(32), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.String(255),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("endpoint", sa.String(2048), nullable=False, unique=True),
        sa.Column("p256dh", sa.String(128), nullable=False),
        sa.Column("auth", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(512)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deactivated_at", TS),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_push_subscriptions_subscriber_id", "push_subscriptions", ["subscriber_id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("description", sa.String(255)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deactivated_at", TS),
        sa.Column("last_error", sa.Text),
    )


def downgrade() -> None:
    for table in (
        "webhook_endpoints",
        "push_subscriptions",
        "preferences",
        "audit_log",
        "dead_letters",
        "delivery_attempts",
    ):
        op.drop_table(table)
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_target", type_="unique")
        batch.create_unique_constraint("uq_deliveries_channel", ["notification_id", "channel"])
        batch.drop_column("target")
    op.drop_column("notifications", "collapse_key")
