"""Tables of the sandbox layer: datasets, their encrypted versions, and jobs."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from policies.budget import Budget
from policies.caps import CapColumns
from policies.db import Base, UTCDateTime, utcnow


class Dataset(CapColumns, Base):
    """A named dataset of one enterprise, with its column declaration."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    declaration: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The enterprise-wide cap across all providers together (against collusion) and what
    # was spent of it: epsilon_cap, delta_cap, epsilon_spent, delta_spent, in the ledger's
    # exact units, from policies.caps.CapColumns (``cap`` and ``cap_spent`` as budgets).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Tier 2's cell-key secret, wrapped by the enterprise's key (sandbox.data.cell_secrets);
    # None until the first tier-2 job on the dataset.
    cellkey_wrapped: Mapped[str | None] = mapped_column(Text, default=None)
    # National classification (sandbox.data.classification): per column the MIIT domain and the
    # GB/T 43697 level the enterprise set; None until it sets one.
    classification: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Held on the enterprise's own node (``sandbox.nodes``): the control plane keeps the
    # declaration and the public row count only, never a data byte or a key.
    node_id: Mapped[str | None] = mapped_column(String(40), default=None)


class DatasetVersion(Base):
    """One upload: stored only encrypted, under a data key wrapped by the tenant's key."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    row_count: Mapped[int] = mapped_column(BigInteger)  # exact: never shown to providers
    source_format: Mapped[str] = mapped_column(String(16))
    object_path: Mapped[str] = mapped_column(String(400))  # relative to the data directory
    wrapped_key: Mapped[str] = mapped_column(Text)
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobStatus(enum.StrEnum):
    DENIED = "denied"
    QUEUED = "queued"
    RUNNING = "running"
    RELEASED = "released"
    FAILED = "failed"
    HELD = "held"  # tier 5: output checks held the output for the enterprise to decide


FINAL_STATUSES = frozenset({JobStatus.DENIED, JobStatus.RELEASED, JobStatus.FAILED})


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    # Null when the job named a dataset the provider may not know about.
    enterprise_id: Mapped[str | None] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40))
    dataset_version: Mapped[int | None] = mapped_column(Integer)
    grant_id: Mapped[str | None] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(64))
    tier: Mapped[int] = mapped_column(Integer)
    query: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The SQL text as submitted, when the query was written in SQL; ``query`` is what it
    # was translated into at submission (``analytics.sql``), and what runs.
    sql: Mapped[str | None] = mapped_column(Text, default=None)
    epsilon: Mapped[int] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(12), index=True)
    # The worker (``JobWorkerLease.id``) that claimed the job: while its lease lasts, no
    # other process takes the job for interrupted.
    worker_id: Mapped[str | None] = mapped_column(String(40))
    # How many times a worker claimed it: one whose worker died is queued again once.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # Long jobs (tier 4): progress reported by the worker, and the provider's cancel request.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # A released binary output (tier 4: model weights), stored encrypted like datasets.
    artifact_path: Mapped[str | None] = mapped_column(String(400))
    artifact_wrapped_key: Mapped[str | None] = mapped_column(Text)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    # Tier 5: the output checks' verdict ({"status", "reasons"}) and, for a held output,
    # the enterprise's decision.
    output_check: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a worker first unwrapped the data key of the job's dataset (recorded under its
    # claim, before any plaintext existed; never cleared).  Unset: the job read no data,
    # and a failure gives its debit back (``sandbox.jobs.refunds``).
    data_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Run by an enterprise node: its release as the node signed it (``sandbox.nodes``).
    node_release: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # When the node that claimed it acknowledged the hand-over (unset: requeued after a
    # while, ``sandbox.jobs.leases.requeue_unacknowledged``).
    node_taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When its result and model were shredded at the end of its grant's commitment letter's
    # retention period (``sandbox.jobs.retention``).
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    @property
    def cost(self) -> Budget:
        """What the job was charged (its ``epsilon`` and ``delta`` columns, in units)."""
        return Budget(self.epsilon, self.delta)


class CodeStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class CodeRequest(Base):
    """Tier 5: a provider's syft function for one dataset, reviewed by its enterprise.

    The approval pins ``sha256`` (of the exact source): a changed function is a new
    request.  ``mock_output`` is the function's output on the tier-1 mock, run in a
    sandbox at submission, for the reviewer; ``reference`` is how that output reads
    (``analytics.output_checks.Inspection.record``), what a job's output is compared with.
    """

    __tablename__ = "code_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    enterprise_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(64))
    function_name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    columns: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), index=True)
    mock_output: Mapped[Any] = mapped_column(JSON, default=None)
    reference: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    mock_error: Mapped[str | None] = mapped_column(Text)
    reviewer_id: Mapped[str | None] = mapped_column(String(40))
    review_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobWorkerLease(Base):
    """A live job worker (a process that claims jobs): renewed every heartbeat, deleted when
    the worker stops.  A running job whose worker's lease lapsed, or whose worker is gone,
    was interrupted (``sandbox.jobs.leases``)."""

    __tablename__ = "job_workers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))  # hostname and boot id
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
