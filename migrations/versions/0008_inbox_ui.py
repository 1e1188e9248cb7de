"""The notification centre: snoozes, actions, and webhook events of action clicks.

- ``notifications.snoozed_until``: hidden from the inbox and its counts while set; the
  beat task clears it when it has passed (``ix_notifications_snoozed`` finds those).
- ``notifications.actions``: up to three ``{id, label, url, clicked_at}``; NULL for none.
- ``deliveries.event``: what a delivery carries, ``''`` for the notification itself or
  ``action:<id>`` for the webhook event of a click on one of its actions. The unique
  constraint on a delivery's target now includes it, so an endpoint gets both the
  notification and each click. On PostgreSQL the constraint's index is rebuilt: on a large
  ``deliveries`` table, run it when the load is low (writes to the table wait for it).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SNOOZED = "snoozed_until IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("snoozed_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("actions", JSON))
    op.create_index(
        "ix_notifications_snoozed",
        "notifications",
        ["snoozed_until"],
        postgresql_where=sa.text(SNOOZED),
        sqlite_where=sa.text(SNOOZED),
    )
    # batch mode: SQLite cannot alter constraints in place (PostgreSQL alters as usual).
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("event", sa.String(64), server_default="", nullable=False))
        batch.drop_constraint("uq_deliveries_target", type_="unique")
        batch.create_unique_constraint(
            "uq_deliveries_target", ["notification_id", "channel", "target", "event"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE event <> ''")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_target", type_="unique")
        batch.create_unique_constraint(
            "uq_deliveries_target", ["notification_id", "channel", "target"]
        )
        batch.drop_column("event")
    op.drop_index("ix_notifications_snoozed", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("actions")
        batch.drop_column("snoozed_until")
