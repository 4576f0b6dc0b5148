"""KPI contracts and their verdicts (pay for results)

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-05 12:00:00

``kpi_contracts``: a KPI both an enterprise and a provider agreed to, pinned by the
SHA-256 of its terms, with who proposed and who accepted (or declined).
``kpi_verdicts``: each evaluation, its job and the signed verdict (``docs/verdicts.md``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0018"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_contracts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"), index=True),
        sa.Column("provider_id", sa.String(40), sa.ForeignKey("principals.id"), index=True),
        sa.Column("dataset_id", sa.String(40), index=True),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("terms_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("proposed_by", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("proposed_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", sa.String(40), sa.ForeignKey("principals.id"), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "kpi_verdicts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("contract_id", sa.String(40), sa.ForeignKey("kpi_contracts.id"), index=True),
        sa.Column("job_id", sa.String(40), index=True),
        sa.Column("requested_by", sa.String(40), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("document", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("kpi_verdicts")
    op.drop_table("kpi_contracts")
