"""Data sources read in place: declarations, versioned mappings, run state (issue 25)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 19:30:00

One source per dataset (``source_declarations``), its credentials encrypted with the
enterprise's keys; each mapping change a new row of ``source_mappings``; the cursor,
failures, back-off and the run's lease in ``source_states`` (``sandbox.sources``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_declarations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("dataset_id", sa.String(40), sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets_wrapped_key", sa.Text(), nullable=True),
        sa.Column("secrets_ciphertext", sa.Text(), nullable=True),
        sa.Column("secrets_version", sa.Integer(), nullable=False),
        sa.Column("credential_names", sa.JSON(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("dataset_id"),
    )
    op.create_index(
        "ix_source_declarations_enterprise_id", "source_declarations", ["enterprise_id"]
    )
    op.create_table(
        "source_mappings",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "source_id", sa.String(40), sa.ForeignKey("source_declarations.id"), nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("source_id", "version"),
    )
    op.create_index("ix_source_mappings_source_id", "source_mappings", ["source_id"])
    op.create_table(
        "source_states",
        sa.Column(
            "source_id", sa.String(40), sa.ForeignKey("source_declarations.id"), primary_key=True
        ),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_version", sa.Integer(), nullable=True),
        sa.Column("last_rows", sa.Integer(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=True),
        sa.Column("claimed_by", sa.String(40), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("source_states")
    op.drop_index("ix_source_mappings_source_id", table_name="source_mappings")
    op.drop_table("source_mappings")
    op.drop_index("ix_source_declarations_enterprise_id", table_name="source_declarations")
    op.drop_table("source_declarations")
