"""The equipment online rate (设备联网率): devices watched per day, daily counts from nodes

Revision ID: 0028
Revises: 0024
Create Date: 2026-12-05 20:30:00

``device_days``: on the core that runs a machine source (a node, or the control plane for a
hosted enterprise), each device the source watched on a day (UTC) and whether it answered
at least one of that day's reads. ``liveness_days``: on the control plane, each node's
enterprise's daily counts as the node reported them (configured, online; no device name).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0028"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_days",
        sa.Column(
            "source_id", sa.String(40), sa.ForeignKey("source_declarations.id"), primary_key=True
        ),
        sa.Column("device", sa.String(200), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("answered_runs", sa.Integer(), nullable=False),
    )
    op.create_index("ix_device_days_enterprise_id", "device_days", ["enterprise_id"])
    op.create_table(
        "liveness_days",
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("configured", sa.Integer(), nullable=False),
        sa.Column("online", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("liveness_days")
    op.drop_index("ix_device_days_enterprise_id", table_name="device_days")
    op.drop_table("device_days")
