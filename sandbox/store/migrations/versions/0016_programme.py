"""programme: enterprises' public categories, and the programme's cell-key secret

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 10:30:00

The bureau's tables (``sandbox.programme``) break the programme's figures down by an
enterprise's industry, district or size band: ``principals.industry``, ``.district`` and
``.size_band``, set by the operator (null: not set).  ``programme_secrets`` holds the one
random secret from which each enterprise's record key is derived, so that every cell of
those tables gets the same cell-key perturbation whenever it is asked for.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime, utcnow

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("industry", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("district", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("size_band", sa.String(length=16), nullable=True))
    secrets_table = op.create_table(
        "programme_secrets",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # Made here, once: reading a table then changes nothing stored.
    op.bulk_insert(
        secrets_table,
        [{"name": "record-keys", "secret": secrets.token_hex(32), "created_at": utcnow()}],
    )


def downgrade() -> None:
    op.drop_table("programme_secrets")
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.drop_column("size_band")
        batch_op.drop_column("district")
        batch_op.drop_column("industry")
