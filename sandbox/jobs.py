"""Jobs: submit (decide, debit, queue — one transaction), run, release; all audited.

Lifecycle: submit → policy decision (allow or deny with reasons; both audited)
→ budget debit, atomic and committed **before** any data is read → queued →
claimed by a worker → grant re-checked (revocation and expiry reach queued
jobs) → data decrypted in memory → OpenDP release → grant checked again →
released.  A job ends ``released``, ``failed`` or ``denied``; a debit is never
refunded once the job was queued (the data may have been read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from analytics.private_query import QueryError, QueryRelease, run_private_query, validate_query
from analytics.schema import Aggregate, AggregateKind, PrivateQuery
from keys import KeyServerUnavailable
from policies import audit
from policies.db import new_id
from policies.decisions import NO_GRANT, Decision, JobRequest, decide
from policies.errors import Denied, InvalidRequest, NotFound
from policies.grants import DELTA_UNIT, EPSILON_UNIT, Grant, debit, delta_units, epsilon_units
from policies.grants import grants_for as provider_grants
from policies.principals import Principal, Role
from sandbox.core import Veil
from sandbox.datasets import latest_version, load_frame, schema_from_json
from sandbox.models import Dataset, DatasetVersion, Job, JobStatus
from sandbox.tenants import require_role

log = logging.getLogger(__name__)
PRIVATE_QUERY_TIER = 3


@dataclass(frozen=True)
class JobSubmission:
    dataset_id: str
    purpose: str
    epsilon: float
    query: PrivateQuery
    delta: float = 0.0


def query_from_json(data: dict[str, Any]) -> PrivateQuery:
    aggregates = tuple(
        Aggregate(AggregateKind(a["kind"]), a.get("column")) for a in data["aggregates"]
    )
    return PrivateQuery(aggregates, data.get("group_by"))


def query_to_json(query: PrivateQuery) -> dict[str, Any]:
    return {
        "aggregates": [{"kind": str(a.kind), "column": a.column} for a in query.aggregates],
        "group_by": query.group_by,
    }


def _decide(
    session: Session, veil: Veil, provider: Principal, sub: JobSubmission, eps: int, delta: int
) -> tuple[Decision, Dataset | None, DatasetVersion | None]:
    dataset = session.get(Dataset, sub.dataset_id)
    grants = provider_grants(session, provider.id, sub.dataset_id) if dataset else []
    if dataset is None or not grants:  # the same answer whether it exists or not
        return Decision(False, (NO_GRANT,)), None, None
    schema = schema_from_json(dataset.declaration)
    request = JobRequest(
        provider.id,
        dataset.id,
        sub.purpose,
        PRIVATE_QUERY_TIER,
        sub.query.columns_used(),
        eps,
        delta,
    )
    classes = {c.name: str(c.column_class) for c in schema.columns}
    decision = decide(request, classes, grants, veil.clock())
    version = latest_version(session, dataset.id)
    if decision.allowed and version is None:
        decision = Decision(False, ("the dataset has no uploaded data yet",), decision.grant)
    if decision.allowed:
        try:
            validate_query(schema, sub.query)
        except QueryError as exc:
            raise InvalidRequest(str(exc)) from None
    return decision, dataset, version


def submit_job(veil: Veil, provider: Principal, sub: JobSubmission) -> Job:
    """Decide, debit and queue in one transaction; raise :class:`Denied` (audited) if refused."""
    require_role(provider, Role.PROVIDER)
    eps, delta = epsilon_units(sub.epsilon), delta_units(sub.delta)
    if eps <= 0:
        raise InvalidRequest("epsilon must be greater than 0 (at least 0.000001)")
    with veil.db.transaction() as session:
        decision, dataset, version = _decide(session, veil, provider, sub, eps, delta)
        job = Job(
            id=new_id("job"),
            provider_id=provider.id,
            dataset_id=sub.dataset_id,
            enterprise_id=dataset.enterprise_id if dataset else None,
            dataset_version=version.version if version else None,
            grant_id=decision.grant.id if decision.grant else None,
            purpose=sub.purpose,
            tier=PRIVATE_QUERY_TIER,
            query=query_to_json(sub.query),
            epsilon=eps,
            delta=delta,
            status=JobStatus.QUEUED,
            reasons=[],
            created_at=veil.clock(),
        )
        if (
            decision.allowed
            and decision.grant
            and not debit(session, decision.grant, job.id, eps, delta)
        ):
            decision = Decision(
                False, ("budget short: another job spent it first",), decision.grant
            )
        _record_submission(session, job, provider, decision)
    if not decision.allowed:
        raise Denied(decision.reasons, job.id)
    veil.jobs_waiting.set()
    return job


def _record_submission(session: Session, job: Job, provider: Principal, decision: Decision) -> None:
    resource = f"job:{job.id}"
    details = {
        "dataset_id": job.dataset_id,
        "purpose": job.purpose,
        "tier": job.tier,
        "epsilon": job.epsilon / EPSILON_UNIT,
        "delta": job.delta / DELTA_UNIT,
    }
    if not decision.allowed:
        job.status, job.reasons, job.finished_at = (
            JobStatus.DENIED,
            list(decision.reasons),
            job.created_at,
        )
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
    audit.record(
        session,
        "budget.debited",
        actor=provider,
        tenant_id=job.enterprise_id,
        resource=f"grant:{job.grant_id}",
        details={
            "job_id": job.id,
            "epsilon": job.epsilon / EPSILON_UNIT,
            "delta": job.delta / DELTA_UNIT,
        },
    )


def visible_job(session: Session, principal: Principal, job_id: str) -> Job:
    """The provider's own job, or one on the enterprise's data; else :class:`NotFound`."""
    job = session.get(Job, job_id)
    if job is None or principal.id not in (job.provider_id, job.enterprise_id):
        raise NotFound("job", job_id)
    return job


# -- running -----------------------------------------------------------------------------
def claim_next_job(veil: Veil) -> str | None:
    """Atomically move the oldest queued job to running; return its id."""
    with veil.db.transaction() as session:
        job_id = session.scalar(
            select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at).limit(1)
        )
        if job_id is None:
            return None
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=veil.clock())
        )
        return job_id if claimed.rowcount == 1 else None


def _fail(veil: Veil, job_id: str, reason: str, outcome: audit.Outcome) -> None:
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.error, job.finished_at = JobStatus.FAILED, reason, veil.clock()
        audit.record(
            session,
            "job.failed",
            outcome=outcome,
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={"reason": reason},
        )


def _grant_still_valid(veil: Veil, session: Session, job: Job) -> bool:
    grant = session.get(Grant, job.grant_id) if job.grant_id else None
    return grant is not None and grant.active_at(veil.clock())


def run_job(veil: Veil, job_id: str) -> None:
    """Run a claimed job to ``released`` or ``failed``."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.RUNNING
        if not _grant_still_valid(veil, session, job):
            valid = False
        else:
            valid = True
            dataset = session.get(Dataset, job.dataset_id)
            enterprise = session.get(Principal, job.enterprise_id)
            version = session.scalar(
                select(DatasetVersion).where(
                    DatasetVersion.dataset_id == job.dataset_id,
                    DatasetVersion.version == job.dataset_version,
                )
            )
    if not valid:
        _fail(
            veil,
            job_id,
            "the grant was revoked or expired before the job ran",
            audit.Outcome.DENIED,
        )
        return
    assert dataset and enterprise and enterprise.slug and version
    try:
        frame = load_frame(veil, enterprise.slug, version)
        release = run_private_query(
            frame,
            schema_from_json(dataset.declaration),
            query_from_json(job.query),
            job.epsilon / EPSILON_UNIT,
            job.delta / DELTA_UNIT,
        )
        del frame
    except KeyServerUnavailable:
        _fail(
            veil,
            job_id,
            "the key server is unavailable; the job's budget stays spent",
            audit.Outcome.FAILED,
        )
        return
    except Exception:
        log.exception("job %s failed", job_id)
        _fail(veil, job_id, "internal error while computing the result", audit.Outcome.FAILED)
        return
    _release(veil, job_id, release)


def release_to_json(release: QueryRelease, dataset_version: int | None) -> dict[str, Any]:
    return {
        "rows": [
            {
                "group": row.group,
                "values": [
                    {
                        "aggregate": v.aggregate,
                        "value": v.value,
                        "noise_scale": v.noise_scale,
                        "ci95": list(v.ci95),
                    }
                    for v in row.values
                ],
            }
            for row in release.rows
        ],
        "epsilon": release.epsilon,
        "delta": release.delta,
        "mechanism": release.mechanism,
        "dataset_version": dataset_version,
    }


def _release(veil: Veil, job_id: str, release: QueryRelease) -> None:
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        if not _grant_still_valid(veil, session, job):
            revoked = True
        else:
            revoked = False
            result = release_to_json(release, job.dataset_version)
            digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
            job.status, job.result, job.result_sha256 = JobStatus.RELEASED, result, digest
            job.finished_at = veil.clock()
            audit.record(
                session,
                "job.released",
                tenant_id=job.enterprise_id,
                resource=f"job:{job.id}",
                details={
                    "result_sha256": digest,
                    "epsilon_spent": release.epsilon,
                    "delta_spent": release.delta,
                },
            )
    if revoked:
        _fail(
            veil,
            job_id,
            "the grant was revoked while the job ran; nothing was released",
            audit.Outcome.DENIED,
        )


def recover_interrupted_jobs(veil: Veil) -> int:
    """After a crash, jobs left running end failed (their data may have been read)."""
    with veil.db.transaction() as session:
        ids = list(session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING)))
    for job_id in ids:
        _fail(
            veil,
            job_id,
            "interrupted by a restart; the job's budget stays spent",
            audit.Outcome.FAILED,
        )
    return len(ids)


class JobWorker(threading.Thread):
    """The embedded, in-process worker: runs queued jobs and signs audit checkpoints."""

    def __init__(self, veil: Veil) -> None:
        super().__init__(name="veil-job-worker", daemon=True)
        self.veil = veil
        self._stopping = threading.Event()
        self._last_checkpoint = time.monotonic()

    def stop(self) -> None:
        self._stopping.set()
        self.veil.jobs_waiting.set()
        self.join(30)

    def run(self) -> None:
        while not self._stopping.is_set():
            # Clear before looking, so a submission arriving meanwhile is never missed.
            self.veil.jobs_waiting.clear()
            job_id = None
            try:
                job_id = claim_next_job(self.veil)
                if job_id is not None:
                    run_job(self.veil, job_id)
                self._maybe_checkpoint()
            except Exception:  # keep serving; the job itself was marked failed where possible
                log.exception("job worker iteration failed")
            if job_id is None:
                self.veil.jobs_waiting.wait(self.veil.settings.job_poll_interval_s)

    def _maybe_checkpoint(self) -> None:
        settings = self.veil.settings
        with self.veil.db.transaction() as session:
            head = session.get(audit.AuditHead, 1)
            last = (
                session.scalar(
                    select(audit.AuditCheckpoint.seq)
                    .order_by(audit.AuditCheckpoint.seq.desc())
                    .limit(1)
                )
                or 0
            )
        pending = (head.seq if head else 0) - last
        due = time.monotonic() - self._last_checkpoint >= settings.audit_checkpoint_interval_s
        if pending >= settings.audit_checkpoint_every or (pending > 0 and due):
            try:
                self.veil.checkpoint()
            except KeyServerUnavailable:
                log.warning("audit checkpoint postponed: key server unavailable")
            self._last_checkpoint = time.monotonic()
