"""Requests the worker could not store, kept with the reason instead of being dropped.

- ``failed_requests``: one row per request (a send, a fan-out, an event) that did not
  validate or whose data the database refused, with its producer, the reason and an
  ASCII-escaped copy of the request.
- ``failed_notifications``: the notification ids such a request carried, so that the
  status of each says "failed" and why.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "failed_requests",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("producer", sa.String(255)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "failed_notifications",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "request_id",
            sa.Uuid,
            sa.ForeignKey("failed_requests.request_id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_failed_notifications_request_id", "failed_notifications", ["request_id"])


def downgrade() -> None:
    op.drop_table("failed_notifications")
    op.drop_table("failed_requests")
