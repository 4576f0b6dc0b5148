"""The control plane's records of collaborations across enterprises (migration 0013).

A collaboration is a provider's proposal (a common schema and the statistics wanted);
enterprises join it from their nodes with a signed opt-in; each run is one round of
secure aggregation whose messages the control plane relays (it reads the sum of the
participants' noised partials, never one of them: ``docs/collaborations.md``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from policies.db import Base, UTCDateTime, utcnow


class CollaborationStatus(enum.StrEnum):
    OPEN = "open"  # enterprises may join; runs may start
    CLOSED = "closed"  # no more runs (the proposer closed it)


class MemberStatus(enum.StrEnum):
    JOINED = "joined"
    LEFT = "left"  # opted out: no future run uses its data


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    RELEASED = "released"
    REFUSED = "refused"  # never started: too few participants, or the proposal closed
    FAILED = "failed"  # too few nodes answered a phase: nothing is released


class Collaboration(Base):
    __tablename__ = "collaborations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    proposer_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(500))
    #: The common schema (``columns``) and the statistics document (``statistics`` etc.).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: SHA-256 of the canonical spec: what each opt-in names, so a changed spec joins nobody.
    spec_sha256: Mapped[str] = mapped_column(String(64))
    min_participants: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default=CollaborationStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CollaborationMember(Base):
    """One enterprise's opt-in, signed by its node (the document is kept as sent)."""

    __tablename__ = "collaboration_members"

    collaboration_id: Mapped[str] = mapped_column(ForeignKey("collaborations.id"), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(40))
    #: The enterprise's public category for this collaboration (industry, district, size).
    category: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(12), default=MemberStatus.JOINED)
    opt_in: Mapped[dict[str, Any]] = mapped_column(JSON)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class CollaborationRun(Base):
    """One round of secure aggregation over the members' nodes."""

    __tablename__ = "collaboration_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collaboration_id: Mapped[str] = mapped_column(ForeignKey("collaborations.id"), index=True)
    requested_by: Mapped[str] = mapped_column(ForeignKey("principals.id"))
    status: Mapped[str] = mapped_column(String(12), default=RunStatus.RUNNING)
    #: The phase the nodes are asked for (``sandbox.collaborations.runs.PHASES``).
    phase: Mapped[str] = mapped_column(String(12))
    #: The node ids asked to take part, and the threshold of them that must answer.
    participants: Mapped[list[str]] = mapped_column(JSON)
    threshold: Mapped[int] = mapped_column(Integer)
    #: The nodes still in the round after each phase, by phase.
    answered: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
    release: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    phase_deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class RunMessage(Base):
    """What one node sent in one phase of a run, for the control plane or for another node
    (``recipient``; empty for the control plane): relayed, never decrypted here."""

    __tablename__ = "collaboration_messages"

    run_id: Mapped[str] = mapped_column(ForeignKey("collaboration_runs.id"), primary_key=True)
    phase: Mapped[str] = mapped_column(String(12), primary_key=True)
    sender: Mapped[str] = mapped_column(String(40), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(40), primary_key=True, default="")
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
