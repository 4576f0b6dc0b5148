"""What a node keeps about the control plane's jobs (migration 0011, table ``node_jobs``)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
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
