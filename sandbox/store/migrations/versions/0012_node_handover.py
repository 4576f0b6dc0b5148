"""node hand-over: when the node acknowledged a job it claimed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 02:10:00

``jobs.node_taken_at``: set when the node that claimed a job says it has it
(``POST /node/v1/jobs/{id}/taken``).  A claim answered while the node was already away (a
long poll in flight when it stopped) is never acknowledged: the control plane queues that
job again after ``sandbox.jobs.leases.HANDOVER_S`` (``requeue_unacknowledged``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_taken_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("node_taken_at")
