"""Registered third-party assessors (issue 22)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 14:00:00

An assessor is now a principal of its own (role ``assessor``, registered by the bureau)
that records its own assessments: ``provider_assessments.assessor_id`` names it.  Rows
recorded before, under a name the bureau typed in, keep that name and no ``assessor_id``;
scorecards count only registered assessors' assessments from now on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0020"  # (there is no 0021)
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_assessments") as batch:
        batch.add_column(
            sa.Column("assessor_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=True)
        )
        batch.create_index("ix_provider_assessments_assessor_id", ["assessor_id"])


def downgrade() -> None:
    with op.batch_alter_table("provider_assessments") as batch:
        batch.drop_index("ix_provider_assessments_assessor_id")
        batch.drop_column("assessor_id")
