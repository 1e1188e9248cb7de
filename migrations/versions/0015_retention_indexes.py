"""Indexes the retention task walks (clarion.core.retention), so each batch it deletes is
found by an index range instead of a scan of the whole table.

- ``ix_notifications_deleted`` (deleted_at, id), partial on ``deleted_at IS NOT NULL``:
  soft-deleted and replaced rows, in the order they were deleted. Rows not deleted have no
  entry, so creating a notification does not touch it.
- ``ix_inbox_events_created`` (created_at) and ``ix_events_received`` (received_at): both
  tables are keyed by something other than time (a recipient's sequence; a producer's
  own event id), so their age needs its own index. Appended at the right edge only.

On PostgreSQL the indexes are built CONCURRENTLY (writes go on while they are built).

- ``retention_cursors``: where a retention pass stopped when its time budget ran out.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

DELETED = "deleted_at IS NOT NULL"
INDEXES = (
    ("ix_notifications_deleted", "notifications", ["deleted_at", "id"], DELETED),
    ("ix_inbox_events_created", "inbox_events", ["created_at"], None),
    ("ix_events_received", "events", ["received_at"], None),
)


def upgrade() -> None:
    op.create_table(
        "retention_cursors",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column(
            "position", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            partial = {}
            if where:
                partial = {"postgresql_where": sa.text(where), "sqlite_where": sa.text(where)}
            op.create_index(
                name,
                table,
                columns,
                postgresql_concurrently=postgres,
                if_not_exists=True,
                **partial,
            )


def downgrade() -> None:
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("retention_cursors")
