"""Request and response bodies of the REST API.

Inputs forbid unknown fields, so no field can be mass-assigned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from analytics.schema import AggregateKind, ColumnClass, ColumnType


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrincipalOut(BaseModel):
    id: str
    role: str
    name: str
    slug: str | None = None
    status: str
    scope: list[str] | None = None
    created_at: datetime


class EnterpriseIn(Input):
    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(
        min_length=1, max_length=48, description="Key-server tenant id, e.g. acme-metal"
    )


class ProviderIn(Input):
    name: str = Field(min_length=1, max_length=200)


class SecurityOfficerIn(Input):
    name: str = Field(min_length=1, max_length=200)
    scope: list[str] | None = Field(default=None, description="Enterprise ids overseen; null = all")


class TokenOut(BaseModel):
    principal_id: str
    token: str = Field(description="Shown once; store it now. Veil keeps only its hash.")


class ColumnIn(Input):
    name: str = Field(min_length=1, max_length=64)
    type: ColumnType
    column_class: ColumnClass = Field(alias="class")
    lower: float | None = None
    upper: float | None = None
    categories: list[str] | None = None
    nullable: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PrivacyUnitIn(Input):
    id_column: str | None = None
    max_rows_per_id: int = Field(default=1, ge=1, le=1000)


class DatasetIn(Input):
    name: str = Field(min_length=1, max_length=200)
    columns: list[ColumnIn] = Field(min_length=1, max_length=500)
    privacy_unit: PrivacyUnitIn = Field(default_factory=PrivacyUnitIn)


class ColumnOut(BaseModel):
    name: str
    type: str
    column_class: str = Field(serialization_alias="class")
    lower: float | None = None
    upper: float | None = None
    categories: list[str] | None = None
    nullable: bool = False


class VersionOut(BaseModel):
    version: int
    source_format: str
    size_bytes: int
    ciphertext_sha256: str
    created_at: datetime
    row_count: int | None = Field(default=None, description="Exact; shown to the owner only")


class DatasetOut(BaseModel):
    id: str
    enterprise_id: str
    name: str
    columns: list[ColumnOut]
    privacy_unit: dict[str, Any]
    latest_version: VersionOut | None = None
    created_at: datetime


class GrantIn(Input):
    provider_id: str
    dataset_ids: list[str] = Field(min_length=1, max_length=100)
    columns: list[str] = Field(min_length=1, max_length=500)
    tiers: list[int] = Field(min_length=1, max_length=6)
    purposes: list[str] = Field(min_length=1, max_length=20)
    valid_from: datetime | None = Field(default=None, description="Default: now")
    valid_until: datetime
    epsilon: float = Field(ge=0, le=100)
    delta: float = Field(default=0.0, ge=0, lt=1)


class BudgetOut(BaseModel):
    epsilon: float
    delta: float
    epsilon_spent: float
    delta_spent: float
    epsilon_remaining: float
    delta_remaining: float


class GrantOut(BaseModel):
    id: str
    enterprise_id: str
    provider_id: str
    dataset_ids: list[str]
    columns: list[str]
    tiers: list[int]
    purposes: list[str]
    valid_from: datetime
    valid_until: datetime
    revoked_at: datetime | None
    budget: BudgetOut


class AggregateIn(Input):
    kind: AggregateKind
    column: str | None = None


class QueryIn(Input):
    aggregates: list[AggregateIn] = Field(min_length=1, max_length=8)
    group_by: str | None = None


class JobIn(Input):
    dataset_id: str
    purpose: str = Field(min_length=1, max_length=64)
    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(default=0.0, ge=0, lt=1)
    query: QueryIn


class JobOut(BaseModel):
    id: str
    provider_id: str
    dataset_id: str
    dataset_version: int | None
    grant_id: str | None
    purpose: str
    tier: int
    query: dict[str, Any]
    epsilon: float
    delta: float
    status: str
    reasons: list[str]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ReleasedValueOut(BaseModel):
    aggregate: str
    value: float
    noise_scale: float = Field(description="Scale of the noise OpenDP added")
    ci95: list[float] = Field(description="95% interval for the true value")


class ReleasedRowOut(BaseModel):
    group: str | None
    values: list[ReleasedValueOut]


class ResultOut(BaseModel):
    job_id: str
    rows: list[ReleasedRowOut]
    epsilon: float = Field(description="Privacy loss of this release, from OpenDP's accounting")
    delta: float
    mechanism: str
    dataset_version: int | None
    result_sha256: str
    remaining_budget: BudgetOut


class AuditEventOut(BaseModel):
    seq: int
    at: datetime
    actor_id: str | None
    actor_role: str | None
    tenant_id: str | None
    action: str
    outcome: str
    resource: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class CheckpointOut(BaseModel):
    seq: int
    head_hash: str
    signature: str
    created_at: datetime


class VerifyOut(BaseModel):
    ok: bool
    events: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str | None


class ErrorOut(BaseModel):
    detail: str
    reasons: list[str] | None = None
    job_id: str | None = None
    problems: list[dict[str, Any]] | None = None


Role = Literal["operator", "enterprise", "provider", "security_officer"]
