"""The dedupe key's uniqueness as a partial index: only rows that have a key get an entry.

``uq_notifications_dedupe`` was a unique constraint on (recipient_id, dedupe_key), so every
notification wrote an index entry, although NULL keys are distinct and were never
constrained: a topic fan-out's rows, which have no key, paid an index insert each for
nothing (docs/benchmarks/fanout.md, 2026-12-06, branch fanout-pg). It becomes
``uq_notifications_dedupe_key``, the same uniqueness on rows whose key is set. The
dedupe lookups (``dedupe_key IN (...) AND recipient_id IN (...)``) imply the index's
condition and use it as before.

On PostgreSQL the new index is built CONCURRENTLY before the constraint is dropped, so
writes go on and the uniqueness is enforced throughout.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

SET = "dedupe_key IS NOT NULL"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        op.create_index(
            "uq_notifications_dedupe_key",
            "notifications",
            ["recipient_id", "dedupe_key"],
            unique=True,
            postgresql_where=sa.text(SET),
            sqlite_where=sa.text(SET),
            postgresql_concurrently=postgres,
            if_not_exists=True,
        )
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("uq_notifications_dedupe", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.create_unique_constraint("uq_notifications_dedupe", ["recipient_id", "dedupe_key"])
    op.drop_index("uq_notifications_dedupe_key", table_name="notifications")
