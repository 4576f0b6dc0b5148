"""enterprise nodes: the control plane's registry of nodes, and what a node keeps itself

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 00:00:00

Control plane: ``nodes`` (one per enterprise whose data lives on its own node: the node's
public keys, or the hash of its one-time enrolment code while pending), ``node_nonces``
(request nonces seen within the clock window), ``datasets.node_id`` (a dataset held on a
node: the control plane keeps its declaration only), ``grants.node_signed`` (the grant as
the enterprise's node signed it) and ``jobs.node_release`` (the release as the node signed
it).  Node: ``node_jobs`` (each control-plane job the node was handed, once: replays are
refused, and a result is never released twice).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"), unique=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("identity_key", sa.Text(), nullable=True),
        sa.Column("signing_key", sa.Text(), nullable=True),
        sa.Column("enrolment_sha256", sa.String(64), nullable=True, unique=True),
        sa.Column("enrolment_expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(), nullable=True),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "node_nonces",
        sa.Column("node_id", sa.String(40), primary_key=True),
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("seen_at", UTCDateTime(), nullable=False, index=True),
    )
    op.create_table(
        "node_jobs",
        sa.Column("control_job_id", sa.String(40), primary_key=True),
        sa.Column("local_job_id", sa.String(40), nullable=True),
        sa.Column("state", sa.String(12), nullable=False, index=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_id", sa.String(40), nullable=True))
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_signed", sa.JSON(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_release", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("node_release")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("node_signed")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("node_id")
    op.drop_table("node_jobs")
    op.drop_table("node_nonces")
    op.drop_table("nodes")
