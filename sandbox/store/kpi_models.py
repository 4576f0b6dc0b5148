"""The control plane's records of KPI contracts and their verdicts (migration 0018).

A KPI contract is what an enterprise and a provider agreed to measure: a KPI over
declared columns of one of the enterprise's datasets, two periods and a target, pinned by
the SHA-256 of its canonical terms; one party proposes, the other accepts those exact
terms.  Each evaluation is a tier-3 job on the provider's grant (the ε it costs is
debited like any job's) and, once that job is released, a signed verdict
(``docs/verdicts.md``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from policies.db import Base, UTCDateTime, utcnow


class ContractStatus(enum.StrEnum):
    PROPOSED = "proposed"  # waiting for the other party's consent
    ACTIVE = "active"  # both consented: evaluations may run
    DECLINED = "declined"  # the other party refused (or the proposer withdrew)


class VerdictStatus(enum.StrEnum):
    PENDING = "pending"  # its job is queued or running
    RELEASED = "released"  # signed: met, not_met or inconclusive
    FAILED = "failed"  # its job was denied or failed: no verdict, nothing released


class KpiContract(Base):
    __tablename__ = "kpi_contracts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    #: Everything both parties agree to (KPI, columns, periods, target, ε, purpose...).
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: SHA-256 of the canonical terms: what the accepting party names.
    terms_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default=ContractStatus.PROPOSED)
    proposed_by: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("principals.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class KpiVerdict(Base):
    """One evaluation of a contract: its job and, once released, the signed verdict."""

    __tablename__ = "kpi_verdicts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("kpi_contracts.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    requested_by: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    status: Mapped[str] = mapped_column(String(12), default=VerdictStatus.PENDING)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: The signed verdict document (``sandbox.kpi.verdicts``), once released.
    document: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
