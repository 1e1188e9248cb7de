"""Subscribers, notifications, deliveries, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
UNREAD = "read_at IS NULL AND archived_at IS NULL AND deleted_at IS NULL"
DUE = "status IN ('pending', 'sending', 'failed')"


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("locale", sa.String(35)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("name", sa.String(255)),
        sa.Column("data", JSON, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("request_id", sa.Uuid, nullable=False),
        sa.Column(
            "recipient_id",
            sa.String(255),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("actor_id", sa.String(255)),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("type", sa.String(128)),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("dedupe_key", sa.String(255)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("seen_at", TS),
        sa.Column("read_at", TS),
        sa.Column("archived_at", TS),
        sa.Column("deleted_at", TS),
        sa.UniqueConstraint("recipient_id", "dedupe_key", name="uq_notifications_dedupe"),
    )
    op.create_index("ix_notifications_inbox", "notifications", ["recipient_id", sa.text("id DESC")])
    op.create_index("ix_notifications_recipient_seq", "notifications", ["recipient_id", "seq"])
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["recipient_id", "category"],
        postgresql_where=sa.text(UNREAD),
        sqlite_where=sa.text(UNREAD),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "notification_id",
            sa.Uuid,
            sa.ForeignKey("notifications.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS),
        sa.Column("last_error", sa.Text),
        sa.Column("provider_ref", sa.String(255)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("notification_id", "channel", name="uq_deliveries_channel"),
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["status", "next_attempt_at"],
        postgresql_where=sa.text(DUE),
        sqlite_where=sa.text(DUE),
    )
    op.create_table(
        "api_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("deliveries")
    op.drop_table("notifications")
    op.drop_table("subscribers")
