"""Data sources read in place (``sandbox.sources``, migration 0024): each dataset's source
declaration, its versioned mappings, and its run state; the devices its machine sources
watched each day, and the daily counts nodes report (migration 0028)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from policies.db import Base, UTCDateTime, utcnow


class SourceDeclaration(Base):
    """Where a dataset's rows come from: one source per dataset.

    ``config`` holds the kind's settings, never a secret; the credentials are one JSON object
    encrypted with the enterprise's keys (``secrets_ciphertext`` under ``secrets_wrapped_key``,
    bound to ``source:<id>`` and ``secrets_version``). ``interval_s`` None: continuous.
    """

    __tablename__ = "source_declarations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), unique=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets_wrapped_key: Mapped[str | None] = mapped_column(Text, default=None)
    secrets_ciphertext: Mapped[str | None] = mapped_column(Text, default=None)  # base64
    secrets_version: Mapped[int] = mapped_column(Integer, default=0)
    #: The credentials' names (``password``), so the enterprise sees which it gave.
    credential_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    interval_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SourceMapping(Base):
    """One version of a source's mapping onto its dataset's declared columns (never edited:
    a change is the next version)."""

    __tablename__ = "source_mappings"
    __table_args__ = (UniqueConstraint("source_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("source_declarations.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SourceState(Base):
    """Where a source's runs stand. ``cursor`` moves only in the transaction that stores the
    version its rows went into; ``claimed_by``/``claimed_until`` is the lease of the one run
    under way (any process: a node, a worker, an API request)."""

    __tablename__ = "source_states"

    source_id: Mapped[str] = mapped_column(ForeignKey("source_declarations.id"), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_version: Mapped[int | None] = mapped_column(Integer, default=None)
    last_rows: Mapped[int | None] = mapped_column(Integer, default=None)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: For each device or endpoint the source watches, whether it answered a read of the
    #: last run that stored.
    devices: Mapped[dict[str, bool] | None] = mapped_column(JSON, default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(40), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class DeviceDay(Base):
    """A device a machine source watched on a day (UTC), on the core that runs the source
    (migration 0028): whether it answered at least one of that day's reads. The equipment
    online rate (设备联网率) is counted from these rows (``sandbox.data.liveness``); they
    stay on that core (a node's never leave it: it reports daily counts only)."""

    __tablename__ = "device_days"

    source_id: Mapped[str] = mapped_column(ForeignKey("source_declarations.id"), primary_key=True)
    device: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The day's runs of the source (one that could not read it included), and in how many
    #: of them this device answered a read.
    runs: Mapped[int] = mapped_column(Integer, default=0)
    answered_runs: Mapped[int] = mapped_column(Integer, default=0)


class LivenessDay(Base):
    """An enterprise's daily equipment counts as its node reported them to the control plane
    (migration 0028): counts only, never a device's name or a value. The bureau's
    ``equipment`` table reads these (for enterprises on nodes) and counts hosted enterprises'
    ``device_days`` directly."""

    __tablename__ = "liveness_days"

    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    configured: Mapped[int] = mapped_column(Integer)
    online: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
