"""Request and response bodies of the REST API.

Inputs forbid unknown fields, so no field can be mass-assigned.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from analytics import column_names
from analytics.schema import ColumnClass, ColumnType
from analytics.sql import MAX_SQL_CHARS
from i18n import Msg
from policies.audit import VerifyReport


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _storable(value: datetime | None) -> datetime | None:
    """A time whose UTC form, and a year either side of it (periods are computed from
    times given), stays within what Python and the database hold (years 1 to 9999)."""
    if value is None:
        return None
    try:
        year = (value.astimezone(UTC) if value.tzinfo is not None else value).year
    except OverflowError:
        year = 0
    if not 2 <= year <= 9998:
        # A Msg: the validation handler shows it as the sentence (sandbox.api.validation).
        raise ValueError(Msg("must be a time between the years 2 and 9998 (in UTC)"))
    return value


#: Every time an API caller gives (bodies and query parameters).
Time = Annotated[datetime, AfterValidator(_storable)]
OptionalTime = Annotated[datetime | None, AfterValidator(_storable)]
# PostgreSQL, unlike SQLite, refuses a value longer than its column (a 500, not a clear
# answer), so every input that is stored in a length-limited column is limited here to
# that length (tests/postgres/test_inputs.py posts over-long values to each).
ID_LENGTH = 40  # every id column
PURPOSE_LENGTH = 64  # jobs.purpose, code_requests.purpose
NAME_LENGTH = 200  # principals.name, datasets.name
SLUG_LENGTH = 48  # principals.slug
CATEGORY_LENGTH = 64  # principals.industry, principals.district
SIZE_BAND_LENGTH = 16  # principals.size_band
COLUMN_NAME_LENGTH = 64

#: An object id a caller names in a body: no id is longer than its column.
ObjectId = Annotated[str, Field(min_length=1, max_length=ID_LENGTH)]
#: A purpose: a job's must be one of its grant's, and is stored with the job.
Purpose = Annotated[str, Field(min_length=1, max_length=PURPOSE_LENGTH)]
#: A column a caller names: compared with the declared names in NFC (analytics.column_names).
ColumnName = Annotated[
    str, Field(min_length=1, max_length=COLUMN_NAME_LENGTH), AfterValidator(column_names.normalise)
]


class PrincipalOut(BaseModel):
    id: str
    role: str
    name: str
    slug: str | None = None
    status: str
    scope: list[str] | None = None
    # Enterprises: their public categories (null: not set; docs/programme.md).
    industry: str | None = None
    district: str | None = None
    size_band: str | None = None
    created_at: datetime


class CategoriesIn(Input):
    """An enterprise's public categories (docs/programme.md); those left out are unchanged,
    null or "" unsets one."""

    industry: str | None = Field(
        default=None, max_length=CATEGORY_LENGTH, description="e.g. machinery"
    )
    district: str | None = Field(
        default=None, max_length=CATEGORY_LENGTH, description="e.g. Jiangbei"
    )
    size_band: str | None = Field(
        default=None, max_length=SIZE_BAND_LENGTH, description="micro, small, medium or large"
    )


class EnterpriseIn(CategoriesIn):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)
    slug: str = Field(
        min_length=1, max_length=SLUG_LENGTH, description="Key-server tenant id, e.g. acme-metal"
    )


class BureauIn(Input):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)


class ProviderIn(Input):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)


class SecurityOfficerIn(Input):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)
    scope: list[ObjectId] | None = Field(
        default=None, description="Enterprise ids overseen; null = all"
    )


class TokenIn(Input):
    """Issuing or rotating a token: how long the new one works."""

    ttl_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="Days the new token works; default VEIL_TOKEN_TTL_DAYS (90), at most "
        "VEIL_TOKEN_MAX_TTL_DAYS (365)",
    )


class TokenRevokeIn(Input):
    reason: str | None = Field(
        default=None, min_length=1, max_length=500, description="Why; goes into the audit log"
    )


class TokenOut(BaseModel):
    principal_id: str
    token: str = Field(description="Shown once; store it now. Veil keeps only its hash.")
    id: str = Field(description="The token's id, as token listings show it")
    expires_at: datetime
    replaces: str | None = Field(
        default=None, description="Rotation: the token revoked by this one (at once)"
    )


class TokenInfoOut(BaseModel):
    """A token's metadata: never the token, nor its hash."""

    id: str
    principal_id: str
    principal_name: str
    principal_role: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = Field(description="To within an hour; null: never used")
    revoked_at: datetime | None
    state: Literal["active", "expired", "revoked"]
    current: bool = Field(description="The token that authenticated this request")


class ColumnIn(Input):
    name: str = Field(min_length=1, max_length=COLUMN_NAME_LENGTH)
    type: ColumnType
    column_class: ColumnClass = Field(alias="class")
    lower: float | None = None
    upper: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    null_rate: float | None = Field(default=None, ge=0, le=1, description="For mock data only")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PrivacyUnitIn(Input):
    id_column: str | None = None
    max_rows_per_id: int = Field(default=1, ge=1, le=1000)


class DatasetIn(Input):
    name: str = Field(min_length=1, max_length=NAME_LENGTH)
    columns: list[ColumnIn] = Field(min_length=1, max_length=500)
    privacy_unit: PrivacyUnitIn = Field(default_factory=PrivacyUnitIn)
    epsilon_cap: float | None = Field(
        default=None, gt=0, le=100, description="Cap for all providers together; default: setting"
    )
    delta_cap: float | None = Field(default=None, ge=0, lt=1)


class ColumnOut(BaseModel):
    name: str
    type: str
    column_class: str = Field(serialization_alias="class")
    lower: float | None = None
    upper: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    null_rate: float | None = None


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
    cap: BudgetOut | None = Field(default=None, description="Enterprise-wide cap; owner only")
    created_at: datetime


class CatalogEntryOut(BaseModel):
    """Tier 0: what a provider may know about a granted dataset (never an exact row count)."""

    dataset_id: str
    name: str
    enterprise_id: str
    columns: list[ColumnOut]
    privacy_unit: dict[str, Any]
    row_count_rounded: int | None = Field(description="Two significant figures, at least 10")
    granted_columns: list[str]
    tiers: list[int]
    purposes: list[str]
    grant_ids: list[str]


class GrantIn(Input):
    provider_id: ObjectId
    dataset_ids: list[ObjectId] = Field(min_length=1, max_length=100)
    columns: list[ColumnName] = Field(min_length=1, max_length=500)
    tiers: list[int] = Field(min_length=1, max_length=6)
    purposes: list[Purpose] = Field(min_length=1, max_length=20)
    valid_from: OptionalTime = Field(default=None, description="Default: now")
    valid_until: Time
    epsilon: float = Field(ge=0, le=100)
    delta: float = Field(default=0.0, ge=0, lt=1)
    min_group_size: int | None = Field(default=None, ge=1, description="Tier 2; default: floor")


class GrantChangeIn(Input):
    """Narrow a grant or extend its validity; give only what changes, and why."""

    reason: str = Field(min_length=1, max_length=500)
    columns: list[ColumnName] | None = Field(default=None, max_length=500)
    tiers: list[int] | None = Field(default=None, max_length=6)
    purposes: list[Purpose] | None = Field(default=None, max_length=20)
    epsilon: float | None = Field(default=None, ge=0, le=100)
    delta: float | None = Field(default=None, ge=0, lt=1)
    valid_until: OptionalTime = None
    min_group_size: int | None = Field(default=None, ge=1)


class RevokeIn(Input):
    reason: str | None = Field(default=None, max_length=500)


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
    min_group_size: int
    budget: BudgetOut
    letter_required: bool = Field(
        default=False, description="In force only once the provider signed its letter"
    )
    letter_signed_at: datetime | None = None


class JobIn(Input):
    dataset_id: ObjectId | None = Field(
        default=None, description="Required, except with sql, whose FROM names the dataset"
    )
    purpose: Purpose
    tier: int = Field(
        default=3, description="2: SDC table; 3: DP query; 4: DP training; 5: reviewed code"
    )
    epsilon: float = Field(default=0.0, ge=0, le=100, description="Tier 3: required, > 0")
    delta: float = Field(default=0.0, ge=0, lt=1)
    query: dict[str, Any] | None = Field(
        default=None,
        description="Tiers 2-3: the query document (/v1/schemas/query); "
        'tier 4: the training document (/v1/schemas/training); tier 5: {"code_request_id": id}'
        " of an approved code request.  Give it or sql, not both.",
    )
    sql: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SQL_CHARS,
        description="Tier 3: the query as SQL instead of query (docs/sql.md); translated "
        "once into the query document, and both are kept with the job",
    )


class SqlIn(Input):
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, description="docs/sql.md")


class SqlTranslationOut(BaseModel):
    dataset_id: str = Field(description="The dataset FROM names (one you hold a grant on)")
    query: dict[str, Any] = Field(description="The query document the SQL translates to")


class JobOut(BaseModel):
    id: str
    provider_id: str
    dataset_id: str
    dataset_version: int | None
    grant_id: str | None
    purpose: str
    tier: int
    query: dict[str, Any]
    sql: str | None = Field(
        default=None, description="The SQL as submitted, when query was translated from it"
    )
    epsilon: float
    delta: float
    status: str
    reasons: list[str]
    error: str | None
    progress: dict[str, Any] | None = Field(
        default=None, description="Tier 4: epoch of epochs (the training loss: enterprise only)"
    )
    cancel_requested: bool = False
    output_check: dict[str, Any] | None = Field(
        default=None, description="Tier 5: the output checks' verdict and reasons"
    )
    created_at: datetime
    finished_at: datetime | None
    shredded_at: datetime | None = Field(
        default=None, description="Its result and model were shredded (retention ended)"
    )


class ReleasedValueOut(BaseModel):
    aggregate: str
    value: float
    noise_scale: float = Field(description="Scale of the noise OpenDP added")
    ci95: list[float] = Field(description="95% interval for the true value")


class ReleasedRowOut(BaseModel):
    group: dict[str, str] | None
    values: list[ReleasedValueOut]


class CellOut(BaseModel):
    key: dict[str, str]
    values: dict[str, float | None] = Field(description="None where suppressed")
    status: str = Field(description="ok, or suppressed")
    reasons: list[str]
    perturbed: bool = Field(
        default=False, description="The values are perturbed by the cell-key method"
    )


class ResultOut(BaseModel):
    job_id: str
    tier: int
    rows: list[ReleasedRowOut] | None = Field(default=None, description="Tier 3")
    cells: list[CellOut] | None = Field(default=None, description="Tier 2")
    rules: dict[str, Any] | None = Field(default=None, description="Tier 2: the SDC rules applied")
    perturbation: dict[str, Any] | None = Field(
        default=None, description="Tier 2: the cell-key perturbation's parameters (accuracy)"
    )
    epsilon: float = Field(default=0.0, description="Privacy loss, from OpenDP's accounting")
    delta: float = 0.0
    mechanism: str | None = None
    card: dict[str, Any] | None = Field(default=None, description="Tier 4: the model card")
    model_sha256: str | None = Field(default=None, description="Tier 4: SHA-256 of the weights")
    model_format: str | None = None
    output: Any = Field(default=None, description="Tier 5: the checked output of the code")
    checks: dict[str, Any] | None = Field(default=None, description="Tier 5: the checks' verdict")
    code_sha256: str | None = Field(default=None, description="Tier 5: the approved source's hash")
    dataset_version: int | None
    result_sha256: str
    remaining_budget: BudgetOut


class PreviewItemOut(BaseModel):
    aggregate: str
    noise_scale: float | None
    ci95_half_width: float | None
    note: str | None


class PreviewOut(BaseModel):
    allowed: bool
    reasons: list[str]
    epsilon: float | None = None
    delta: float | None = None
    aggregates: list[PreviewItemOut] | None = None
    notes: list[str] | None = None
    training: dict[str, Any] | None = Field(
        default=None, description="Tier 4: noise multiplier, expected epsilon, steps, rate"
    )
    table: dict[str, Any] | None = Field(
        default=None,
        description="Tier 2: the disclosure rules, the cell-key perturbation and each "
        "aggregate's accuracy",
    )


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
    """A verification's result.  ``verified_from_seq``: 0 when every event was read; else
    the signed checkpoint it started from, the events up to which the full verification at
    ``full_verification_at`` read."""

    ok: bool
    events: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str | None
    verified_from_seq: int = 0
    full_verification_at: datetime | None = None

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyOut:
        return cls(ok=report.ok, events=report.events, checkpoints=report.checkpoints,
                   first_bad_seq=report.first_bad_seq, problem=report.problem,
                   verified_from_seq=report.from_seq,
                   full_verification_at=report.full_at)  # fmt: skip


class ErrorOut(BaseModel):
    """An error body (``sandbox.api.errors.ERROR_SCHEMA`` documents it)."""

    code: str
    message: str
    detail: str
    reasons: list[str] | None = None
    job_id: str | None = None
    problems: list[dict[str, Any]] | None = None


Role = Literal["operator", "enterprise", "provider", "security_officer"]


class CodeIn(Input):
    """A syft function's source for one dataset and purpose (see docs/reviewed-code.md)."""

    dataset_id: ObjectId
    purpose: Purpose
    source: str = Field(min_length=1, max_length=64_000)


class ReasonIn(Input):
    reason: str = Field(min_length=1, max_length=500)


class CodeOut(BaseModel):
    id: str
    provider_id: str
    dataset_id: str
    purpose: str
    function_name: str
    source: str
    sha256: str
    columns: list[str]
    status: str
    mock_output: Any = Field(description="The function's output on the mock, and its checks")
    reviewer_id: str | None
    review_reason: str | None
    created_at: datetime
    decided_at: datetime | None


class HeldOut(BaseModel):
    job_id: str
    output: Any
    checks: dict[str, Any]
    code_sha256: str


# -- the city's purpose vocabulary and commitment letters (docs/commitments.md) -------------
#: Names of a purpose in the vocabulary (policies.purposes.NAME_MAX).
PurposeName = Annotated[str, Field(min_length=1, max_length=100)]


class PurposeIn(Input):
    """A purpose's names, and whether it is retired (no new grant may name it)."""

    name_zh: PurposeName
    name_en: PurposeName
    retired: bool = False


class PurposeOut(BaseModel):
    code: str
    name_zh: str
    name_en: str
    retired: bool
    retired_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ProviderKeyIn(Input):
    """An Ed25519 public key in PEM form ('veil letters keygen' writes one)."""

    public_key_pem: str = Field(min_length=1, max_length=2000)


class ProviderKeyOut(BaseModel):
    id: str
    fingerprint: str
    created_at: datetime


class LetterIn(Input):
    """The obligations the enterprise asks of the provider, beyond the grant's terms."""

    retention_days: int = Field(
        ge=1, le=3650, description="Results and models are kept this long after the grant ends"
    )
    insurance_reference: str = Field(min_length=1, max_length=200)


class LetterSignatureIn(Input):
    """The provider's signature of the letter as fetched ('veil letters sign' makes it)."""

    signature: str = Field(min_length=1, max_length=200)


class LetterOut(BaseModel):
    grant_id: str
    status: str = Field(description="awaiting_signature, signed or shredded")
    retain_until: datetime
    signed_at: datetime | None
    shredded_at: datetime | None
    letter: dict[str, Any] = Field(description="The letter file: verify it offline")
