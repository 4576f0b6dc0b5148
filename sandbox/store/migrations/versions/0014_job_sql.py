"""jobs.sql: the SQL text a tier-3 query was submitted as

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 06:00:00

A provider may write a private query as SQL (``analytics.sql``); the job keeps the text
as submitted in ``jobs.sql`` next to ``jobs.query``, the query document it was translated
into once, at submission, and which the job runs.  Null for a job submitted as JSON.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sql", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("sql")
