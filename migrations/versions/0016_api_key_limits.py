"""Per API key rate limit and daily quota (docs/operations/rate-limits.md).

- ``api_keys.rate_limit``: requests per window in the ``limits`` notation ("600/minute");
  NULL uses ``CLARION_API_KEY_RATE_LIMIT``.
- ``api_keys.daily_quota``: recipients per day; NULL uses ``CLARION_API_KEY_DAILY_QUOTA``,
  0 means none.

Revision ID: 0016
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rate_limit", sa.String(64)))
        batch.add_column(sa.Column("daily_quota", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("daily_quota")
        batch.drop_column("rate_limit")
