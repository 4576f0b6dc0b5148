"""Jobs: submit (decide, debit, queue — one transaction), preview, cancel; all audited.

Lifecycle: submit → policy decision (allow or deny with reasons; both audited)
→ budget debit of the grant *and* of the dataset's enterprise-wide cap
(``policies.caps``: the rule and the debit, as :class:`policies.budget.Budget` values),
atomic and committed **before** any data is read → queued → run by the
worker (``sandbox.jobs.runner``).  Tier 2 (SDC-checked tables) costs no ε; tier 3
(DP queries) debits what it asks for.  Composition is basic sequential
composition: the ε and δ of every job add up, per grant and per dataset.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.schema import ColumnClass, DatasetSchema
from i18n import Msg
from policies import audit
from policies.budget import Budget
from policies.capabilities import Capability, require
from policies.caps import JobDebit, cap_reason, count_spent, debit_job, debit_jobs
from policies.db import insert_new, new_id
from policies.decisions import NO_GRANT, Decision, JobRequest, decide, unknown_column
from policies.errors import Conflict, Denied, InvalidRequest, NotFound, VeilError
from policies.grants import Grant
from policies.grants import grants_for as provider_grants
from policies.principals import Principal

# The tiers were named here first; they live in policies.tiers now (re-exported), the
# tiers that have jobs in the registry of job kinds.
from policies.tiers import AGGREGATE_TIER as AGGREGATE_TIER
from policies.tiers import CODE_TIER as CODE_TIER
from policies.tiers import PRIVATE_QUERY_TIER as PRIVATE_QUERY_TIER
from policies.tiers import TRAINING_TIER as TRAINING_TIER
from sandbox.data.datasets import latest_version, rounded_count, schema_from_json
from sandbox.jobs.kinds import JOB_TIERS as JOB_TIERS
from sandbox.jobs.kinds import JobKind, JobQuery, kind_for
from sandbox.jobs.sql_jobs import resolve_dataset, translate
from sandbox.runtime.veil import Veil
from sandbox.store.group_commit import Turn
from sandbox.store.models import Dataset, DatasetVersion, Job, JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSubmission:
    """What a provider asks for: a declarative query document on one dataset.

    A tier-3 query may come as ``sql`` instead (``query`` empty, ``dataset_id`` empty or
    the dataset FROM names): it is translated into ``query`` once, at submission
    (``sandbox.jobs.sql_jobs``).
    """

    dataset_id: str
    purpose: str
    query: dict[str, Any]
    tier: int = PRIVATE_QUERY_TIER
    epsilon: float = 0.0
    delta: float = 0.0
    sql: str | None = None


@dataclass(frozen=True)
class _Parsed:
    """A submission read once: its kind, its query, and its cost."""

    kind: JobKind
    query: JobQuery
    cost: Budget


def _translated(veil: Veil, provider: Principal, sub: JobSubmission) -> JobSubmission:
    """The submission with its SQL (if any) translated into its dataset and query document."""
    if sub.sql is None:
        return sub
    if sub.query:
        raise InvalidRequest(Msg("give the query as query (JSON) or as sql, not both"))
    translation = translate(sub.sql, sub.tier)
    with veil.db.transaction() as session:
        named = translation.dataset
        dataset_id = resolve_dataset(session, provider, named, sub.dataset_id or None)
    return replace(sub, dataset_id=dataset_id, query=translation.document)


def _parse(sub: JobSubmission) -> _Parsed:
    """The submission's one parse (submit and preview each call this once)."""
    cost = Budget.from_floats(sub.epsilon, sub.delta)
    kind = kind_for(sub.tier)
    kind.cost(cost.epsilon_units, cost.delta_units)
    return _Parsed(kind, kind.parse(sub.query, sub.epsilon, sub.delta), cost)


@dataclass
class _Decided:
    decision: Decision
    dataset: Dataset | None = None
    version: DatasetVersion | None = None
    schema: DatasetSchema | None = None


class _Reads:
    """The decision's reads in one transaction, each read once: the submissions of a turn
    (``submit_job``) mostly ask for the same dataset and grants."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._datasets: dict[str, Dataset | None] = {}
        self._grants: dict[tuple[str, str], list[Grant]] = {}
        self._versions: dict[str, DatasetVersion | None] = {}
        self._schemas: dict[str, DatasetSchema] = {}

    def dataset(self, dataset_id: str) -> Dataset | None:
        if dataset_id not in self._datasets:
            self._datasets[dataset_id] = self.session.get(Dataset, dataset_id)
        return self._datasets[dataset_id]

    def grants(self, provider_id: str, dataset_id: str) -> list[Grant]:
        key = (provider_id, dataset_id)
        if key not in self._grants:
            self._grants[key] = provider_grants(self.session, provider_id, dataset_id)
        return self._grants[key]

    def version(self, dataset_id: str) -> DatasetVersion | None:
        if dataset_id not in self._versions:
            self._versions[dataset_id] = latest_version(self.session, dataset_id)
        return self._versions[dataset_id]

    def schema(self, dataset: Dataset) -> DatasetSchema:
        if dataset.id not in self._schemas:
            self._schemas[dataset.id] = schema_from_json(dataset.declaration)
        return self._schemas[dataset.id]


def _decide(
    reads: _Reads,
    veil: Veil,
    provider: Principal,
    sub: JobSubmission,
    parsed: _Parsed,
) -> _Decided:
    dataset = reads.dataset(sub.dataset_id)
    grants = reads.grants(provider.id, sub.dataset_id) if dataset else []
    if dataset is None or not grants:  # the same answer whether it exists or not
        return _Decided(Decision(False, (NO_GRANT,)))
    schema = reads.schema(dataset)
    kind, cost = parsed.kind, parsed.cost
    _check_columns_known(schema, kind.columns(parsed.query), grants)
    query, refused = kind.resolve(reads.session, provider.id, dataset.id, parsed.query)
    request = JobRequest(
        provider.id,
        dataset.id,
        sub.purpose,
        sub.tier,
        kind.columns(query),
        cost.epsilon_units,
        cost.delta_units,
    )
    classes = {c.name: str(c.column_class) for c in schema.columns}
    decision = decide(request, classes, grants, veil.clock())
    if refused and decision.allowed:
        decision = Decision(False, (refused,), decision.grant)
    version = reads.version(dataset.id)
    if decision.allowed and version is None:
        no_data = Msg("the dataset has no uploaded data yet")
        decision = Decision(False, (no_data,), decision.grant)
    cap = cap_reason(dataset.cap, dataset.cap_spent, cost) if decision.allowed else None
    if cap:
        decision = Decision(False, (cap,), decision.grant)
    if decision.allowed and version is not None:
        kind.validate(schema, query, rounded_count(version.row_count))
    return _Decided(decision, dataset, version, schema)


def _check_columns_known(schema: DatasetSchema, used: frozenset[str], grants: list[Grant]) -> None:
    """422 ``unknown_column`` for a column the dataset does not have.

    Only asked once the provider is known to hold a grant on the dataset (an unknown or
    ungranted dataset answers as before, saying nothing of its columns). The suggestion
    comes from the granted, non-secret columns only: a name the caller may use. (A tier-5
    job names no columns before it is resolved: its code's were checked when submitted.)
    """
    known = {c.name for c in schema.columns}
    unknown = sorted(used - known)
    if unknown:
        granted = {c for g in grants for c in g.columns}
        usable = {
            c.name
            for c in schema.columns
            if c.name in granted and c.column_class != ColumnClass.SECRET
        }
        raise InvalidRequest(unknown_column(unknown[0], usable), code="unknown_column")


def _validate_early(veil: Veil, provider: Principal, sub: JobSubmission, parsed: _Parsed) -> None:
    """Run a slow validation (training's noise search, up to seconds) before the write
    transaction, so it never holds the database lock; the check inside hits its cache."""
    if not parsed.kind.slow_validation:
        return
    with veil.db.transaction() as session:
        dataset = session.get(Dataset, sub.dataset_id)
        if dataset is None or not provider_grants(session, provider.id, dataset.id):
            return  # the decision will deny it, saying no more than for a missing dataset
        version = latest_version(session, dataset.id)
        schema = schema_from_json(dataset.declaration)
    if version is not None:
        with contextlib.suppress(InvalidRequest):  # reported after the policy decision
            parsed.kind.validate(schema, parsed.query, rounded_count(version.row_count))


@dataclass(frozen=True)
class _Submitting:
    """A submission, parsed, waiting for its turn (``Veil.submissions``)."""

    provider: Principal
    sub: JobSubmission
    parsed: _Parsed


class _Together(Exception):
    """A turn's debits, made together, were refused: its submissions go again one by one."""


def submit_job(veil: Veil, provider: Principal, sub: JobSubmission) -> Job:
    """Decide, debit and queue in one transaction; raise :class:`Denied` (audited) if refused.

    Submissions made at once (the API's threads) share a transaction: one thread writes
    those waiting with it (``sandbox.store.group_commit``), each decided in order against
    what those before it spent, exactly as if each had committed alone."""
    require(provider, Capability.SUBMIT_JOBS)
    sub = _translated(veil, provider, sub)
    parsed = _parse(sub)
    _validate_early(veil, provider, sub, parsed)
    job: Job = veil.submissions.run(
        _Submitting(provider, sub, parsed),
        functools.partial(_submit_turn, veil),
        functools.partial(_queue, veil),
    )
    return job


def _submit_turn(veil: Veil, turn: Turn[_Submitting]) -> list[Job | Exception]:
    """A turn's outcomes: each submission's job, or the error it raises (:class:`Denied`,
    audited, or a bad request, which writes nothing); together in one transaction, or, if
    that fails, each in its own."""
    try:
        return _submit(veil, turn.items)
    except Exception as exc:
        if len(turn.items()) == 1:
            return [exc]
        log.info("%d submissions failed together; each goes alone", len(turn.items()))
    outcomes: list[Job | Exception] = []
    for submitting in turn.items():
        try:
            outcomes += _submit(veil, functools.partial(list, [submitting]))
        except Exception as exc:  # raised in the submitting thread
            outcomes.append(exc)
    return outcomes


def _submit(veil: Veil, take: Callable[[], list[_Submitting]]) -> list[Job | Exception]:
    """Decide, debit and record the submissions ``take`` gives, in one transaction
    (``_queue`` then queues their jobs).

    They are taken once the transaction holds the write lock: those that arrive while it
    waits join the turn.  Several are debited together: counted as they are decided
    (``count_spent``) and paid at the end (``debit_jobs``), where a refusal (the rows
    changed since they were read, which the write lock rules out) raises
    :class:`_Together`, rolling everything back.  One alone is debited as it is decided
    (``debit_job``), a refusal denying it."""
    outcomes: list[Job | Exception] = []
    jobs: list[Job] = []  # written past the unit of work (``insert_new``): left transient
    debits: list[JobDebit] = []
    entries: list[audit.Entry] = []
    with veil.db.transaction() as session:
        session.connection()  # the write lock
        turn = take()
        together = len(turn) > 1
        reads = _Reads(session)
        for submitting in turn:
            provider, sub, cost = submitting.provider, submitting.sub, submitting.parsed.cost
            try:
                decided = _decide(reads, veil, provider, sub, submitting.parsed)
            except VeilError as exc:  # this submission is wrong: nothing of it is written
                outcomes.append(exc)
                continue
            decision, dataset = decided.decision, decided.dataset
            job = _new_job(veil, submitting, decided)
            jobs.append(job)
            if decision.allowed and decision.grant and dataset:
                if together:
                    count_spent(decision.grant, dataset, cost)
                    debits.append(JobDebit(decision.grant, dataset.id, job.id, cost))
                else:
                    refused = debit_job(session, decision.grant, Dataset, dataset.id, job.id, cost)
                    if refused:
                        decision = Decision(False, (refused,), decision.grant)
            entries += _submission_events(job, provider, decision)
            outcomes.append(job if decision.allowed else Denied(decision.reasons, job.id))
        insert_new(session.connection(), jobs)
        if debits and not debit_jobs(session, Dataset, debits):
            raise _Together("a debit made together was refused")
        audit.append(session, entries)
    return outcomes


def _queue(
    veil: Veil, turn: Sequence[_Submitting], outcomes: Sequence[Job | BaseException]
) -> None:
    """A turn's allowed jobs, committed, handed to the engine (while the next turn goes)."""
    veil.jobs_queued([job.id for job in outcomes if isinstance(job, Job)])


def _new_job(veil: Veil, submitting: _Submitting, decided: _Decided) -> Job:
    dataset, version, grant = decided.dataset, decided.version, decided.decision.grant
    sub, cost = submitting.sub, submitting.parsed.cost
    return Job(
        id=new_id("job"),
        provider_id=submitting.provider.id,
        dataset_id=sub.dataset_id,
        enterprise_id=dataset.enterprise_id if dataset else None,
        dataset_version=version.version if version else None,
        grant_id=grant.id if grant else None,
        purpose=sub.purpose,
        tier=sub.tier,
        query=sub.query,
        sql=sub.sql,
        epsilon=cost.epsilon_units,
        delta=cost.delta_units,
        status=JobStatus.QUEUED,
        reasons=[],
        created_at=veil.clock(),
        attempts=0,
        cancel_requested=False,
    )


def _submission_events(job: Job, provider: Principal, decision: Decision) -> list[audit.Entry]:
    """The job's audit events (appended by the caller, last: the audit head is locked only
    from there to the commit); a denied job is marked so."""
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
        denied = audit.Entry(
            "job.denied",
            actor=provider,
            outcome=audit.Outcome.DENIED,
            tenant_id=job.enterprise_id,
            resource=resource,
            details=details | {"reasons": list(decision.reasons)},
        )
        return [denied]
    entries = [
        audit.Entry(
            "job.submitted",
            actor=provider,
            tenant_id=job.enterprise_id,
            resource=resource,
            details=details | {"grant_id": job.grant_id},
        )
    ]
    if job.cost:
        entries.append(
            audit.Entry(
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
        )
    return entries


def preview_job(veil: Veil, provider: Principal, sub: JobSubmission) -> dict[str, Any]:
    """What a tier-2 table, tier-3 query or tier-4 training would cost and how accurate it
    would be.

    Spends nothing and reads no data: the only dataset facts used are its declaration
    (tier 2: bounds and privacy unit) and its rounded row count (tier 0), for mean
    estimates and the training sampling rate.
    """
    require(provider, Capability.SUBMIT_JOBS)
    sub = _translated(veil, provider, sub)
    parsed = _parse(sub)
    parsed.kind.require_preview()
    _validate_early(veil, provider, sub, parsed)
    with veil.db.transaction() as session:
        decided = _decide(_Reads(session), veil, provider, sub, parsed)
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
    assert decided.decision.grant is not None
    return parsed.kind.preview(
        decided.schema,
        parsed.query,
        (sub.epsilon, sub.delta),
        decided.decision.grant.min_group_size,
        rounded_count(decided.version.row_count),
    )


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
    failure (``sandbox.jobs.refunds`` gives back only those).
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
    require(provider, Capability.SUBMIT_JOBS)
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
