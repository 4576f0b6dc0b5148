"""tier 2 by the cell-key method: each dataset's wrapped secret; no released-cells record

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:00:00

Tier-2 tables are perturbed by the cell-key method (``analytics.cellkey``) under a
per-dataset secret, held wrapped by the enterprise's key: ``datasets.cellkey_wrapped``,
empty until a dataset's first tier-2 job creates it (a migration cannot reach the key
server).  The pairwise differencing guard that compared new cells with every released
one is gone, and with it ``released_cells``, which held the true counts of released
cells.  Downgrading recreates that table empty (the old guard then starts from no
history) and drops the secrets: the perturbation they keyed cannot be reproduced.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cellkey_wrapped", sa.Text(), nullable=True))
    with op.batch_alter_table("released_cells", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_released_cells_dataset_id"))
    op.drop_table("released_cells")


def downgrade() -> None:
    op.create_table(
        "released_cells",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_released_cells_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_released_cells")),
    )
    with op.batch_alter_table("released_cells", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_released_cells_dataset_id"), ["dataset_id"], unique=False
        )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("cellkey_wrapped")
