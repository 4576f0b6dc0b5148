"""node_collaborations.rules: an enterprise's own rules for a supply-chain analysis

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 08:00:00

An enterprise approving a two-party analysis (``node.work.pairs``) may ask for a larger
minimum of joined rows than the template's; the stricter of the two sides' rules applies.
Its node keeps them in ``node_collaborations.rules`` (null for a benchmark's opt-in).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_collaborations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_collaborations", schema=None) as batch_op:
        batch_op.drop_column("rules")
