"""the city's purpose vocabulary, providers' signing keys, commitment letters

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 11:00:00

``purposes``: the vocabulary new grants name their purposes from (seeded with
``policies.purposes.SEED``).  ``provider_signing_keys``: the Ed25519 public keys providers
register to sign letters.  ``commitment_letters``: each grant's letter as the enterprise
signed it, and the provider's signature.  ``grants.letter_required`` (false for every
grant made before: they stay in force) and ``grants.letter_signed_at``; ``jobs.shredded_at``
(its result and model shredded at the end of the letter's retention period).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from policies.db import UTCDateTime
from policies.purposes import SEED

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    purposes = op.create_table(
        "purposes",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("name_zh", sa.String(100), nullable=False),
        sa.Column("name_en", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
    )
    now = datetime.now(UTC)  # UTCDateTime stores it as naive UTC on every backend
    op.bulk_insert(
        purposes,
        [
            {"code": c, "name_zh": zh, "name_en": en, "created_at": now, "updated_at": now}
            for c, zh, en in SEED
        ],
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("letter_required", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("letter_signed_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shredded_at", UTCDateTime(), nullable=True))
    op.create_table(
        "provider_signing_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("provider_id", sa.String(40), sa.ForeignKey("principals.id"), index=True),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "commitment_letters",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("grant_id", sa.String(40), sa.ForeignKey("grants.id"), unique=True),
        sa.Column("enterprise_id", sa.String(40), sa.ForeignKey("principals.id"), index=True),
        sa.Column("provider_id", sa.String(40), sa.ForeignKey("principals.id"), index=True),
        sa.Column("provider_key_id", sa.String(40), sa.ForeignKey("provider_signing_keys.id")),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("retain_until", UTCDateTime(), nullable=False, index=True),
        sa.Column("provider_signature", sa.Text(), nullable=True),
        sa.Column("signed_at", UTCDateTime(), nullable=True),
        sa.Column("shredded_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("commitment_letters")
    op.drop_table("provider_signing_keys")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("shredded_at")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("letter_signed_at")
        batch_op.drop_column("letter_required")
    op.drop_table("purposes")
