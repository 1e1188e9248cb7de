"""``subscribers`` gets fillfactor 50 on PostgreSQL, so a page's rows can all be updated
in one transaction and stay on their page (HOT).

A fan-out batch advances the sequence of up to a thousand neighbouring subscribers in one
transaction, and the old versions cannot be reclaimed before it ends. At fillfactor 70 a
freshly filled page has room for new versions of fewer than half of its rows: the rest
move to other pages and write an entry in every index of the table, which makes the first
fan-out after subscribers are created the dearest (docs/benchmarks/fanout.md, branch
fanout-pg3). At 50 the free half holds a new version of every row the page was filled
with. Pages written before this keep their layout until a
rewrite (``VACUUM FULL subscribers``); new pages take up to 1.4 times the room.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE subscribers SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE subscribers SET (fillfactor = 70)")
