"""Jobs: submit (decide, debit, queue — one transaction), preview, cancel; all audited.

Lifecycle: submit → policy decision (allow or deny with reasons; both audited)
→ budget debit of the grant *and* of the dataset's enterprise-wide cap
(``policies.caps``: the rule and the debit, as :class:`policies.budget.Budget` values),
atomic and committed **before** any data is read → queued → run by the
worker (``sandbox.runner``).  Tier 2 (SDC-checked tables) costs no ε; tier 3
(DP queries) debits what it asks for.  Composition is basic sequential
composition: the ε and δ of every job add up, per grant and per dataset.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.private_query import QueryError, preview_query, validate_query
from analytics.query_document import parse_query
from analytics.schema import ColumnClass, DatasetSchema, PrivateQuery
from analytics.sdc import SdcQueryError, SdcRules, TableQuery, validate_table_query
from analytics.sdc_preview import preview_table
from analytics.training_document import parse_training
from analytics.training_spec import TrainingError, TrainingSpec
from i18n import Msg
from policies import audit
from policies.budget import Budget
from policies.caps import cap_reason, debit_job
from policies.db import new_id
from policies.decisions import NO_GRANT, Decision, JobRequest, decide, unknown_column
from policies.errors import Conflict, Denied, InvalidRequest, NotFound
from policies.grants import Grant
from policies.grants import grants_for as provider_grants
from policies.principals import Principal, Role

# Tiers live in policies.tiers; these names stay importable from here for older callers.
from policies.tiers import AGGREGATE_TIER as AGGREGATE_TIER
from policies.tiers import CODE_TIER as CODE_TIER
from policies.tiers import JOB_TIERS as JOB_TIERS
from policies.tiers import PRIVATE_QUERY_TIER as PRIVATE_QUERY_TIER
from policies.tiers import TRAINING_TIER as TRAINING_TIER
from sandbox.core import Veil
from sandbox.datasets import latest_version, rounded_count, schema_from_json
from sandbox.models import Dataset, DatasetVersion, Job, JobStatus
from sandbox.reviewed_code import CodeJob, parse_code_job, resolve_code_job
from sandbox.tenants import require_role


@dataclass(frozen=True)
class JobSubmission:
    """What a provider asks for: a declarative query document on one dataset."""

    dataset_id: str
    purpose: str
    query: dict[str, Any]
    tier: int = PRIVATE_QUERY_TIER
    epsilon: float = 0.0
    delta: float = 0.0


JobQuery = PrivateQuery | TableQuery | TrainingSpec | CodeJob


def _with_budget(document: dict[str, Any], epsilon: float, delta: float) -> dict[str, Any]:
    """The training document with the job's own epsilon and delta (one source of truth)."""
    for name, value in (("epsilon", epsilon), ("delta", delta)):
        if name in document and document[name] != value:
            raise InvalidRequest(
                Msg(
                    "training.{name} differs from the job's {name}; give it once",
                    name=name,
                )
            )
    return document | {"epsilon": epsilon, "delta": delta}


def parse_job_query(
    tier: int, document: dict[str, Any], epsilon: float = 0.0, delta: float = 0.0
) -> JobQuery:
    """The query (tiers 2, 3) or training spec (tier 4) of a job; InvalidRequest if malformed."""
    if tier not in JOB_TIERS:
        raise InvalidRequest(
            Msg(
                "tier {tier} has no jobs here: tier 0 is GET /v1/catalog, tier 1 "
                "is GET /v1/datasets/{{id}}/mock, tiers 2 to 5 are jobs",
                tier=tier,
            )
        )
    if tier == CODE_TIER:
        return parse_code_job(document)
    if tier == TRAINING_TIER:
        try:
            return parse_training(_with_budget(document, epsilon, delta))
        except TrainingError as exc:
            raise InvalidRequest(
                Msg(
                    "training: {problem}",
                    problem=exc.args[0] if exc.args else str(exc),
                )
            ) from None
    try:
        query = parse_query(document)
    except QueryError as exc:
        raise InvalidRequest(
            Msg(
                "query: {problem}",
                problem=exc.args[0] if exc.args else str(exc),
            )
        ) from None
    if tier == AGGREGATE_TIER:
        return TableQuery(query.aggregates, query.group_by)
    return query


def _validate(schema: DatasetSchema, query: JobQuery, rows_public: int) -> None:
    if isinstance(query, CodeJob):
        return  # checked when the code was submitted and approved
    try:
        if isinstance(query, TrainingSpec):
            # Imported here: analytics.training loads torch and Opacus (about 3 s), which
            # only training needs; the API and the CLI start without them.
            from analytics.training import preview_training, validate_training

            validate_training(schema, query)
            preview_training(schema, query, rows_public)  # checks delta against 1/n, etc.
        elif isinstance(query, TableQuery):
            validate_table_query(schema, query)
        else:
            validate_query(schema, query)
    except (QueryError, SdcQueryError, TrainingError) as exc:
        raise InvalidRequest(
            Msg(
                "query: {problem}",
                problem=exc.args[0] if exc.args else str(exc),
            )
        ) from None


def columns_of(query: JobQuery) -> frozenset[str]:
    if isinstance(query, CodeJob):
        return frozenset(query.columns)
    if isinstance(query, TrainingSpec):
        return frozenset({*query.features, query.target})
    used = {a.column for a in query.aggregates if a.column is not None}
    return frozenset(used | set(query.group_by))


def _costs(sub: JobSubmission) -> Budget:
    cost = Budget.from_floats(sub.epsilon, sub.delta)
    eps, delta = cost.epsilon_units, cost.delta_units
    if sub.tier in (PRIVATE_QUERY_TIER, TRAINING_TIER) and eps <= 0:
        raise InvalidRequest(
            Msg(
                "a tier-{tier} job needs epsilon > 0 (at least 0.000001)",
                tier=sub.tier,
            )
        )
    if sub.tier == TRAINING_TIER and delta <= 0:
        raise InvalidRequest(Msg("a tier-4 training job needs delta > 0 (e.g. 1e-6), below 1/rows"))
    if sub.tier == AGGREGATE_TIER and (eps or delta):
        raise InvalidRequest(
            Msg("a tier-2 job costs no privacy budget: leave epsilon and delta at 0")
        )
    if sub.tier == CODE_TIER and delta:
        raise InvalidRequest(Msg("a tier-5 job's DP helpers are pure epsilon-DP: leave delta at 0"))
    return cost


@dataclass
class _Decided:
    decision: Decision
    dataset: Dataset | None = None
    version: DatasetVersion | None = None
    schema: DatasetSchema | None = None


def _decide(
    session: Session,
    veil: Veil,
    provider: Principal,
    sub: JobSubmission,
    query: JobQuery,
    cost: Budget,
) -> _Decided:
    dataset = session.get(Dataset, sub.dataset_id)
    grants = provider_grants(session, provider.id, sub.dataset_id) if dataset else []
    if dataset is None or not grants:  # the same answer whether it exists or not
        return _Decided(Decision(False, (NO_GRANT,)))
    schema = schema_from_json(dataset.declaration)
    _check_columns_known(schema, query, grants)
    refused = None
    if isinstance(query, CodeJob):
        query, _, refused = resolve_code_job(session, provider.id, dataset.id, query)
    request = JobRequest(
        provider.id,
        dataset.id,
        sub.purpose,
        sub.tier,
        columns_of(query),
        cost.epsilon_units,
        cost.delta_units,
    )
    classes = {c.name: str(c.column_class) for c in schema.columns}
    decision = decide(request, classes, grants, veil.clock())
    if refused and decision.allowed:
        decision = Decision(False, (refused,), decision.grant)
    version = latest_version(session, dataset.id)
    if decision.allowed and version is None:
        no_data = Msg("the dataset has no uploaded data yet")
        decision = Decision(False, (no_data,), decision.grant)
    cap = cap_reason(dataset.cap, dataset.cap_spent, cost) if decision.allowed else None
    if cap:
        decision = Decision(False, (cap,), decision.grant)
    if decision.allowed and version is not None:
        _validate(schema, query, rounded_count(version.row_count))
    return _Decided(decision, dataset, version, schema)


def _check_columns_known(schema: DatasetSchema, query: JobQuery, grants: list[Grant]) -> None:
    """422 ``unknown_column`` for a column the dataset does not have.

    Only asked once the provider is known to hold a grant on the dataset (an unknown or
    ungranted dataset answers as before, saying nothing of its columns). The suggestion
    comes from the granted, non-secret columns only: a name the caller may use.
    """
    if isinstance(query, CodeJob):
        return  # the reviewed code's columns were checked when it was submitted
    known = {c.name for c in schema.columns}
    unknown = sorted(columns_of(query) - known)
    if unknown:
        granted = {c for g in grants for c in g.columns}
        usable = {
            c.name
            for c in schema.columns
            if c.name in granted and c.column_class != ColumnClass.SECRET
        }
        raise InvalidRequest(unknown_column(unknown[0], usable), code="unknown_column")


def _check_training_early(
    veil: Veil, provider: Principal, sub: JobSubmission, spec: TrainingSpec
) -> None:
    """Run a training spec's slow check (the noise search, up to seconds) before the write
    transaction, so it never holds the database lock; the check inside hits its cache."""
    with veil.db.transaction() as session:
        dataset = session.get(Dataset, sub.dataset_id)
        if dataset is None or not provider_grants(session, provider.id, dataset.id):
            return  # the decision will deny it, saying no more than for a missing dataset
        version = latest_version(session, dataset.id)
        schema = schema_from_json(dataset.declaration)
    if version is not None:
        with contextlib.suppress(InvalidRequest):  # reported after the policy decision
            _validate(schema, spec, rounded_count(version.row_count))


def submit_job(veil: Veil, provider: Principal, sub: JobSubmission) -> Job:
    """Decide, debit and queue in one transaction; raise :class:`Denied` (audited) if refused."""
    require_role(provider, Role.PROVIDER)
    cost = _costs(sub)
    query = parse_job_query(sub.tier, sub.query, sub.epsilon, sub.delta)
    if isinstance(query, TrainingSpec):
        _check_training_early(veil, provider, sub, query)
    with veil.db.transaction() as session:
        decided = _decide(session, veil, provider, sub, query, cost)
        decision, dataset, version = decided.decision, decided.dataset, decided.version
        job = Job(
            id=new_id("job"),
            provider_id=provider.id,
            dataset_id=sub.dataset_id,
            enterprise_id=dataset.enterprise_id if dataset else None,
            dataset_version=version.version if version else None,
            grant_id=decision.grant.id if decision.grant else None,
            purpose=sub.purpose,
            tier=sub.tier,
            query=sub.query,
            epsilon=cost.epsilon_units,
            delta=cost.delta_units,
            status=JobStatus.QUEUED,
            reasons=[],
            created_at=veil.clock(),
        )
        if decision.allowed and decision.grant and dataset:
            refused = debit_job(session, decision.grant, Dataset, dataset.id, job.id, cost)
            if refused:
                decision = Decision(False, (refused,), decision.grant)
        _record_submission(session, job, provider, decision)
    if not decision.allowed:
        raise Denied(decision.reasons, job.id)
    veil.job_queued(job.id)
    return job


def _record_submission(session: Session, job: Job, provider: Principal, decision: Decision) -> None:
    resource = f"job:{job.id}"
    details = {
        "dataset_id": job.dataset_id,
        "purpose": job.purpose,
        "tier": job.tier,
        **job.cost.describe(),
    }
    if not decision.allowed:
        job.status, job.reasons = JobStatus.DENIED, list(decision.reasons)
        job.finished_at = job.created_at
        session.add(job)
        audit.record(
            session,
            "job.denied",
            actor=provider,
            outcome=audit.Outcome.DENIED,
            tenant_id=job.enterprise_id,
            resource=resource,
            details=details | {"reasons": list(decision.reasons)},
        )
        return
    session.add(job)
    audit.record(
        session,
        "job.submitted",
        actor=provider,
        tenant_id=job.enterprise_id,
        resource=resource,
        details=details | {"grant_id": job.grant_id},
    )
    if job.cost:
        audit.record(
            session,
            "budget.debited",
            actor=provider,
            tenant_id=job.enterprise_id,
            resource=f"grant:{job.grant_id}",
            details={
                "job_id": job.id,
                "dataset_id": job.dataset_id,
                **job.cost.describe(),
            },
        )


def preview_job(veil: Veil, provider: Principal, sub: JobSubmission) -> dict[str, Any]:
    """What a tier-2 table, tier-3 query or tier-4 training would cost and how accurate it
    would be.

    Spends nothing and reads no data: the only dataset facts used are its declaration
    (tier 2: bounds and privacy unit) and its rounded row count (tier 0), for mean
    estimates and the training sampling rate.
    """
    require_role(provider, Role.PROVIDER)
    cost = _costs(sub)
    query = parse_job_query(sub.tier, sub.query, sub.epsilon, sub.delta)
    if isinstance(query, CodeJob):
        raise InvalidRequest(
            Msg(
                "previews are for tiers 2 to 4 (tier 5 shows its output on the mock when submitted)"
            )
        )
    if isinstance(query, TrainingSpec):
        _check_training_early(veil, provider, sub, query)
    with veil.db.transaction() as session:
        decided = _decide(session, veil, provider, sub, query, cost)
        audit.record(
            session,
            "job.previewed",
            actor=provider,
            outcome=audit.Outcome.OK if decided.decision.allowed else audit.Outcome.DENIED,
            tenant_id=decided.dataset.enterprise_id if decided.dataset else None,
            resource=f"dataset:{sub.dataset_id}",
            details={
                "epsilon": sub.epsilon,
                "delta": sub.delta,
                "reasons": list(decided.decision.reasons),
            },
        )
    if not decided.decision.allowed or decided.schema is None or decided.version is None:
        return {"allowed": False, "reasons": list(decided.decision.reasons), "preview": None}
    if isinstance(query, TableQuery):
        assert decided.decision.grant is not None
        rules = SdcRules(min_count=decided.decision.grant.min_group_size)
        table = preview_table(decided.schema, query, rules)
        return {"allowed": True, "reasons": [], "preview": None, "table": table}
    rows_public = rounded_count(decided.version.row_count)
    if isinstance(query, TrainingSpec):
        from analytics.training import preview_training  # torch: lazily

        return {
            "allowed": True,
            "reasons": [],
            "preview": None,
            "training": preview_training(decided.schema, query, rows_public),
        }
    try:
        preview = preview_query(
            decided.schema, query, sub.epsilon, sub.delta, rows_hint=rows_public
        )
    except QueryError as exc:
        raise InvalidRequest(
            Msg(
                "query: {problem}",
                problem=exc.args[0] if exc.args else str(exc),
            )
        ) from None
    return {"allowed": True, "reasons": [], "preview": preview}


def visible_job(session: Session, principal: Principal, job_id: str) -> Job:
    """The provider's own job, or one on the enterprise's data; else :class:`NotFound`."""
    job = session.get(Job, job_id)
    if job is None or principal.id not in (job.provider_id, job.enterprise_id):
        raise NotFound("job", job_id)
    return job


def cancel_queued_jobs(
    session: Session,
    *,
    why: str,
    now: datetime,
    grant_ids: list[str] | None = None,
    provider_ids: list[str] | None = None,
    actor: Principal | None = None,
) -> list[str]:
    """End the queued jobs of the given grants or providers as failed; return their ids.

    Their debits stay, although a queued job has read no data yet, as for a job its
    provider cancels: a revocation, an expiry or a suspension is not an infrastructure
    failure (``sandbox.refunds`` gives back only those).
    """
    if grant_ids is None and provider_ids is None:
        raise ValueError("name the grants or the providers whose queued jobs to cancel")
    query = select(Job).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at)
    if grant_ids is not None:
        query = query.where(Job.grant_id.in_(grant_ids))
    if provider_ids is not None:
        query = query.where(Job.provider_id.in_(provider_ids))
    jobs = list(session.scalars(query))
    for job in jobs:
        job.status, job.error, job.finished_at = JobStatus.FAILED, f"cancelled: {why}", now
        audit.record(
            session,
            "job.cancelled",
            actor=actor,
            outcome=audit.Outcome.DENIED,
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={"reason": why, "grant_id": job.grant_id},
        )
    return [job.id for job in jobs]


def cancel_expired(veil: Veil) -> int:
    """Cancel queued jobs whose grant expired (revocation cancels at once already)."""
    now = veil.clock()
    with veil.db.transaction() as session:
        expired = list(
            session.scalars(
                select(Grant.id)
                .join(Job, Job.grant_id == Grant.id)
                .where(Job.status == JobStatus.QUEUED, Grant.valid_until <= now)
            )
        )
        if not expired:
            return 0
        cancelled = cancel_queued_jobs(
            session, grant_ids=sorted(set(expired)), why="the grant expired", now=now
        )
        return len(cancelled)


def cancel_job(veil: Veil, provider: Principal, job_id: str) -> Job:
    """Cancel a queued job at once, or ask a running one to stop (its budget stays spent)."""
    require_role(provider, Role.PROVIDER)
    with veil.db.transaction() as session:
        job = visible_job(session, provider, job_id)
        if job.provider_id != provider.id:
            raise NotFound("job", job_id)
        resource = f"job:{job.id}"
        if job.status == JobStatus.QUEUED:
            job.status, job.finished_at = JobStatus.FAILED, veil.clock()
            job.error = "cancelled: by the provider; the job's budget stays spent"
            audit.record(
                session,
                "job.cancelled",
                actor=provider,
                tenant_id=job.enterprise_id,
                resource=resource,
                details={"reason": "by the provider"},
            )
        elif job.status == JobStatus.RUNNING:
            job.cancel_requested = True
            audit.record(
                session,
                "job.cancel_requested",
                actor=provider,
                tenant_id=job.enterprise_id,
                resource=resource,
            )
        else:
            raise Conflict(
                Msg(
                    "job '{job_id}' has already ended ({status})",
                    job_id=job_id,
                    status=job.status,
                )
            )
    return job
