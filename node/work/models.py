"""What a node keeps about the control plane's jobs (migration 0011, ``node_jobs``) and the
collaborations its enterprise joined (migration 0013)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from policies.db import Base, UTCDateTime, utcnow


class NodeJobState(enum.StrEnum):
    TAKEN = "taken"  # recorded before anything else: a second hand-over is a replay
    SUBMITTED = "submitted"  # decided and queued here as a local job
    ANSWERED = "answered"  # the signed release or refusal is ready (``outcome``)


class NodeJob(Base):
    """One control-plane job this node was handed: once, whatever the control plane says."""

    __tablename__ = "node_jobs"

    control_job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    local_job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    state: Mapped[str] = mapped_column(String(12))
    #: ``{"kind": "release"|"fail", "document": ..., "signature": ...}``
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the control plane acknowledged the outcome (None: to be sent again).
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class NodeCollaboration(Base):
    """The enterprise's opt-in to a collaboration: which dataset, how its columns map to the
    common schema, its public category, and its own budget for it (its ledger here)."""

    __tablename__ = "node_collaborations"

    collaboration_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[str] = mapped_column(String(40))
    #: common column -> this dataset's column
    mapping: Mapped[dict[str, str]] = mapped_column(JSON)
    category: Mapped[str] = mapped_column(String(100))
    #: A supply-chain analysis's own rules (``{"min_rows": n}``); null for a benchmark.
    rules: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    epsilon_cap: Mapped[int] = mapped_column(BigInteger)  # ledger units (policies.budget)
    delta_cap: Mapped[int] = mapped_column(BigInteger)
    epsilon_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    delta_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(12))  # joined | left
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class NodeCollaborationRun(Base):
    """A run this node contributed to (once per run id): what it cost, and, when released,
    the release and where this enterprise stands (kept here, never sent)."""

    __tablename__ = "node_collaboration_runs"

    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    collaboration_id: Mapped[str] = mapped_column(String(40), index=True)
    epsilon: Mapped[int] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(12))  # contributed | released | failed
    release: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    standing: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
