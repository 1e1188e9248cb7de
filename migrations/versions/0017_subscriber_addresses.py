"""Subscriber addresses of the Apprise channels (docs/channels/chat.md, docs/channels/sms.md).

``subscriber_addresses``: one address per subscriber per channel (a chat URL, a phone
number), encrypted at rest (``sealed``, Fernet keyed from CLARION_SECRET_KEY) with a
masked form for the API (``display``).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriber_addresses",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.String(255),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("display", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deactivated_at", TS),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("subscriber_id", "channel", name="uq_subscriber_addresses_channel"),
    )


def downgrade() -> None:
    op.drop_table("subscriber_addresses")
