"""code reference: how a tier-5 request's output reads on the mock, from its review run

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:30:00

``code_requests.reference`` keeps, from the sandboxed run on the mock at submission (a
process that never held private data), the output's shape, which statistic or DP call
each of its numbers is, and the DP calls made: what a job's output on the private data
is compared with (``analytics.output_checks``, rule f).  Requests made before it have
none: their jobs run the reference on the mock again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("code_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("code_requests", schema=None) as batch_op:
        batch_op.drop_column("reference")
