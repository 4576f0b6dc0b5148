"""classification: each column's MIIT data domain and GB/T 43697-2024 level

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 21:00:00

``datasets.classification`` holds what the enterprise set for its columns
(``sandbox.data.classification``): ``{"columns": {name: {"domain": ..., "level": ...}},
"updated_at": ...}``.  Datasets declared before it have none: every column's level is the
default of its Veil class and its domain is unset.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("classification", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("classification")
