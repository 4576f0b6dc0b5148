"""refunds: when a job's data was first read, and refunds in the budget ledger

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:00:00

``jobs.data_read_at`` is set, under the worker's claim, once the data key of the job's
dataset is unwrapped and before any plaintext exists; a job without it read nothing.
``budget_debits.refund_of`` names the debit a (negative) ledger entry gives back; it is
unique, so no debit is refunded twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import policies.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_read_at", policies.db.UTCDateTime(), nullable=True))
    with op.batch_alter_table("budget_debits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_of", sa.String(length=40), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_budget_debits_refund_of"), ["refund_of"])


def downgrade() -> None:
    with op.batch_alter_table("budget_debits", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_budget_debits_refund_of"), type_="unique")
        batch_op.drop_column("refund_of")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("data_read_at")
