"""API tokens: an expiry for every token, and when each was last used

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 09:00:00

Tokens issued before this revision had no expiry.  They get one now: 90 days after the
upgrade (the default lifetime of a new token, ``VEIL_TOKEN_TTL_DAYS``), not after their
creation, so that an upgrade locks nobody out at once while every old token still ends.
The settings are not read here (a migration runs the same for every deployment), so a
deployment with another lifetime rotates its old tokens itself (``veil tokens rotate``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: How long tokens issued before this revision keep working after the upgrade.
EXISTING_TOKENS_LIFETIME = timedelta(days=90)


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    # Stored as naive UTC, as policies.db.UTCDateTime stores every time.
    expires = (datetime.now(UTC) + EXISTING_TOKENS_LIFETIME).replace(tzinfo=None)
    tokens = sa.table("api_tokens", sa.column("expires_at", sa.DateTime()))
    op.execute(tokens.update().values(expires_at=expires))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("expires_at", existing_type=sa.DateTime(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
