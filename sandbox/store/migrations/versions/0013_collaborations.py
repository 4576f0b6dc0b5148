"""collaborations across enterprises: proposals, opt-ins, runs of secure aggregation

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 05:00:00

Control plane: ``collaborations`` (a provider's proposal: common schema, statistics,
minimum participants), ``collaboration_members`` (each enterprise's opt-in as its node
signed it), ``collaboration_runs`` (one round of secure aggregation each) and
``collaboration_messages`` (what the nodes sent in each phase, relayed unread).  Node:
``node_collaborations`` (its enterprise's opt-ins, their mapping and budget ledger) and
``node_collaboration_runs`` (each run it contributed to, once).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collaborations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("proposer_id", sa.String(40), sa.ForeignKey("principals.id"), index=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(500), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("min_participants", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "collaboration_members",
        sa.Column("collaboration_id", sa.String(40), sa.ForeignKey("collaborations.id"),
                  primary_key=True),
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"),
                  primary_key=True),
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("opt_in", sa.JSON(), nullable=False),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column("left_at", UTCDateTime(), nullable=True),
    )  # fmt: skip
    op.create_table(
        "collaboration_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("collaboration_id", sa.String(40), sa.ForeignKey("collaborations.id"),
                  index=True),
        sa.Column("requested_by", sa.String(40), sa.ForeignKey("principals.id")),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("phase", sa.String(12), nullable=False),
        sa.Column("participants", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("answered", sa.JSON(), nullable=False),
        sa.Column("release", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("phase_deadline", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )  # fmt: skip
    op.create_table(
        "collaboration_messages",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("collaboration_runs.id"),
                  primary_key=True),
        sa.Column("phase", sa.String(12), primary_key=True),
        sa.Column("sender", sa.String(40), primary_key=True),
        sa.Column("recipient", sa.String(40), primary_key=True),
        sa.Column("body", sa.JSON(), nullable=False),
    )  # fmt: skip
    op.create_table(
        "node_collaborations",
        sa.Column("collaboration_id", sa.String(40), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.String(40), nullable=False),
        sa.Column("mapping", sa.JSON(), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("epsilon_cap", sa.BigInteger(), nullable=False),
        sa.Column("delta_cap", sa.BigInteger(), nullable=False),
        sa.Column("epsilon_spent", sa.BigInteger(), nullable=False),
        sa.Column("delta_spent", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column("left_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "node_collaboration_runs",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("collaboration_id", sa.String(40), nullable=False, index=True),
        sa.Column("epsilon", sa.BigInteger(), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("release", sa.JSON(), nullable=True),
        sa.Column("standing", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_collaboration_runs")
    op.drop_table("node_collaborations")
    op.drop_table("collaboration_messages")
    op.drop_table("collaboration_runs")
    op.drop_table("collaboration_members")
    op.drop_table("collaborations")
