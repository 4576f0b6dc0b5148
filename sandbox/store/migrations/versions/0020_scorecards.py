"""Providers' scorecards and exit (issue 22)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 12:00:00

``evaluation_periods`` (opened and closed by the bureau, with weights and a pass mark),
``provider_ratings`` (enterprises' 1-5 ratings), ``provider_assessments`` (the bureau's
and third-party assessors' 0-100 scores), ``scorecards`` (one signed document per
provider and closed period) and ``exit_proposals`` (two failures in a row).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _principal(name: str, *, nullable: bool = False, index: bool = False) -> sa.Column[str]:
    return sa.Column(
        name, sa.String(40), sa.ForeignKey("principals.id"), nullable=nullable, index=index
    )


def _period() -> sa.Column[str]:
    return sa.Column(
        "period_id",
        sa.String(40),
        sa.ForeignKey("evaluation_periods.id"),
        nullable=False,
        index=True,
    )


def upgrade() -> None:
    op.create_table(
        "evaluation_periods",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
        sa.Column("status", sa.String(12), nullable=False, index=True),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("pass_mark", sa.Float(), nullable=False),
        _principal("opened_by"),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "provider_ratings",
        sa.Column("id", sa.String(40), primary_key=True),
        _period(),
        _principal("enterprise_id"),
        _principal("provider_id", index=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("period_id", "enterprise_id", "provider_id"),
    )
    op.create_table(
        "provider_assessments",
        sa.Column("id", sa.String(40), primary_key=True),
        _period(),
        _principal("provider_id", index=True),
        sa.Column("assessor", sa.String(80), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        _principal("recorded_by"),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("period_id", "provider_id", "assessor"),
    )
    op.create_table(
        "scorecards",
        sa.Column("id", sa.String(40), primary_key=True),
        _period(),
        _principal("provider_id", index=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("period_id", "provider_id"),
    )
    op.create_table(
        "exit_proposals",
        sa.Column("id", sa.String(40), primary_key=True),
        _principal("provider_id", index=True),
        sa.Column(
            "period_id", sa.String(40), sa.ForeignKey("evaluation_periods.id"), nullable=False
        ),
        sa.Column("scorecard_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        _principal("decided_by", nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("effects", sa.JSON(), nullable=True),
    )


def downgrade() -> None:
    for table in (
        "exit_proposals",
        "scorecards",
        "provider_assessments",
        "provider_ratings",
        "evaluation_periods",
    ):
        op.drop_table(table)
