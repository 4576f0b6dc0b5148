"""The control plane's records of the providers' evaluations (migration 0020).

An **evaluation period** is opened and closed by the bureau, with the weights and the
pass mark it set when opening it.  While it is open, enterprises rate the providers
they have granted (1-5, one rating each, changeable), the bureau records its assessment
and each registered third-party assessor its own (0-100 with a reason; migration 0022
links an assessment to its assessor's principal).  Closing it stores one
signed **scorecard** per provider, and an **exit proposal** for a provider whose
scorecard failed twice in a row (``docs/programme.md``, "Scorecards and exit").
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from policies.db import Base, UTCDateTime, utcnow


class PeriodStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ExitStatus(enum.StrEnum):
    PROPOSED = "proposed"  # waiting for the bureau's decision
    CONFIRMED = "confirmed"  # the provider left the programme
    REJECTED = "rejected"  # nothing changed


class EvaluationPeriod(Base):
    __tablename__ = "evaluation_periods"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    status: Mapped[str] = mapped_column(String(12), default=PeriodStatus.OPEN, index=True)
    #: Each component's weight (``sandbox.scorecards.scoring.COMPONENTS``).
    weights: Mapped[dict[str, float]] = mapped_column(JSON)
    pass_mark: Mapped[float] = mapped_column(Float)
    opened_by: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProviderRating(Base):
    """An enterprise's rating of a provider in a period; never shown one by one."""

    __tablename__ = "provider_ratings"
    __table_args__ = (UniqueConstraint("period_id", "enterprise_id", "provider_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_id: Mapped[str] = mapped_column(ForeignKey("evaluation_periods.id"), index=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    rating: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Assessment(Base):
    """The bureau's, or a registered third-party assessor's, score of a provider in a period."""

    __tablename__ = "provider_assessments"
    __table_args__ = (UniqueConstraint("period_id", "provider_id", "assessor"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_id: Mapped[str] = mapped_column(ForeignKey("evaluation_periods.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    #: Who assessed, the key of "one per assessor, provider and period": ``bureau`` for the
    #: bureau's own; a registered assessor's principal id (as ``assessor_id``); before
    #: migration 0022, a name the bureau typed in (kept, never counted again).
    assessor: Mapped[str] = mapped_column(String(80))
    #: The registered assessor (role ``assessor``) who recorded it; None for the bureau's.
    assessor_id: Mapped[str | None] = mapped_column(
        ForeignKey("principals.id"), nullable=True, index=True, default=None
    )
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(500))
    recorded_by: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Scorecard(Base):
    """A provider's result for a closed period: the signed document, and its outcome."""

    __tablename__ = "scorecards"
    __table_args__ = (UniqueConstraint("period_id", "provider_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_id: Mapped[str] = mapped_column(ForeignKey("evaluation_periods.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    #: True: passed; False: failed; None: nothing to score it on (neither).
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExitProposal(Base):
    """Two failed scorecards in a row: the bureau confirms the provider's exit or rejects."""

    __tablename__ = "exit_proposals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    #: The period whose scorecard was the second failure.
    period_id: Mapped[str] = mapped_column(ForeignKey("evaluation_periods.id"))
    scorecard_ids: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default=ExitStatus.PROPOSED, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("principals.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: What a confirmed exit did (grants revoked, jobs cancelled, outputs shredded).
    effects: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
