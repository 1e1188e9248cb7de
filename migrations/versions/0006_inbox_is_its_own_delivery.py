"""The notification row is the in-app delivery; subscribers leave room for HOT updates.

- A notification shown in the inbox was also stored as an ``in_app`` delivery row with
  status ``sent``: a second row, two more index entries and a foreign-key check per
  recipient, saying nothing the notification row (``in_inbox``) does not. Those rows are
  removed; the notification status API lists the inbox delivery from the notification
  itself. An ``in_app`` row is still stored when the inbox was skipped, with its reason
  ("opted out").
- ``ix_notifications_inbox`` (recipient, id DESC) is dropped: the inbox is listed by
  (recipient, seq), which ``ix_notifications_recipient_seq`` serves.
- ``subscribers`` gets fillfactor 70 on PostgreSQL: every notification updates its
  recipient's sequence, and free room on the page lets that update be HOT (no index
  entries, less WAL). Pages written before this keep their layout until a rewrite
  (``VACUUM FULL subscribers``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE channel = 'in_app' AND status = 'sent'")
    op.drop_index("ix_notifications_inbox", table_name="notifications")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE subscribers SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE subscribers RESET (fillfactor)")
    op.create_index("ix_notifications_inbox", "notifications", ["recipient_id", sa.text("id DESC")])
    op.execute(
        "INSERT INTO deliveries (id, notification_id, channel, target, status, attempts,"
        " created_at, updated_at)"
        " SELECT id, id, 'in_app', '', 'sent', 1, created_at, created_at"
        " FROM notifications WHERE in_inbox"
    )
