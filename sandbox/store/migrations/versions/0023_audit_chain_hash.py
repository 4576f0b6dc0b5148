"""The audit chain's hash function, kept with its head (issue 23)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 16:20:00

``audit_head.hash_alg`` names the hash function the next event is chained with:
``sha256`` (every chain before this migration) or ``sm3`` (the national profile).  It
changes only together with an ``audit.chain_hash_switched`` event, which records the
switch in the chain itself (``policies.audit.switch_chain_hash``); verifiers follow those
events, never this column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(
            sa.Column("hash_alg", sa.String(16), nullable=False, server_default="sha256")
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("hash_alg")
