"""How a running job ends: released, held (tier 5) or failed, each recorded in one
transaction, audited, and only by the worker whose claim it still runs under: a worker taken
for dead lost its jobs (queued again or failed by ``sandbox.jobs.leases``, perhaps claimed by
another worker since) and settles none of them.  A release re-checks the grant in its own
transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.decisions import JobRequest, decide
from policies.errors import Conflict, NotFound
from policies.grants import Grant
from policies.principals import Principal
from sandbox.accounts.tenants import require_reason
from sandbox.data.datasets import schema_from_json
from sandbox.isolation.pool import ChildResult, SandboxError
from sandbox.jobs.artifacts import StoredArtifact, store_artifact
from sandbox.jobs.held_outputs import attach_held, delete_held, detach_held, encrypt_held, load_held
from sandbox.jobs.kinds import JobKind, JobQuery, kind_for, parse_stored
from sandbox.jobs.refunds import fail_with_refund
from sandbox.jobs.reviewed_code import CheckedOutput
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, Job, JobStatus
from sandbox.store.node_models import refuse_if_on_node

log = logging.getLogger(__name__)

CANCELLED: Final = "cancelled: by the provider, or its suspension; the job's budget stays spent"


def _still_ours(veil: Veil, job: Job) -> bool:
    """Whether ``job`` still runs under this worker's claim."""
    ours = job.status == JobStatus.RUNNING and job.worker_id == veil.worker_id
    if not ours:
        log.warning("job %s is no longer this worker's (%s): left as it is", job.id, job.status)
    return ours


def fail_running(
    veil: Veil,
    job_id: str,
    reason: str,
    outcome: audit.Outcome = audit.Outcome.FAILED,
    *,
    refund_unread: bool = False,
) -> bool:
    """End this worker's running job ``job_id`` failed, audited; False (nothing done) when it
    is not (see the module).

    ``refund_unread``: the failure is not the provider's doing (an infrastructure failure),
    so a job that read none of its data gets its debit back (``sandbox.jobs.refunds``).
    """
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or not _still_ours(veil, job):
            return False
        if refund_unread:
            fail_with_refund(session, job, reason, veil.clock())
        else:
            job.status, job.error, job.finished_at = JobStatus.FAILED, reason, veil.clock()
            audit.record(
                session,
                "job.failed",
                outcome=outcome,
                tenant_id=job.enterprise_id,
                resource=f"job:{job.id}",
                details={"reason": reason},
            )
    veil.job_ended(job_id)  # committed: wake the requests waiting for it
    return True


def still_allowed(
    veil: Veil, session: Session, job: Job, query: JobQuery | None = None
) -> tuple[str, ...]:
    """Reasons the job's grant no longer allows it (empty when it still does).

    ``query``: the job's parsed query when the caller has it (a run parses it once,
    ``sandbox.jobs.kinds.parse_stored``); else it is parsed here.
    """
    grant = session.get(Grant, job.grant_id) if job.grant_id else None
    dataset = session.get(Dataset, job.dataset_id)
    if grant is None or dataset is None:
        return (Msg("the grant or the dataset is gone"),)
    schema = schema_from_json(dataset.declaration)
    kind = kind_for(job.tier)
    parsed = parse_stored(job) if query is None else query
    resolved, refused = kind.resolve(session, job.provider_id, job.dataset_id, parsed)
    if refused:
        return (refused,)
    request = JobRequest(
        job.provider_id, job.dataset_id, job.purpose, job.tier, kind.columns(resolved), 0, 0,
        epsilon_paid=job.epsilon > 0,
    )  # fmt: skip  # already paid: only the terms are re-checked
    classes = {c.name: str(c.column_class) for c in schema.columns}
    return decide(request, classes, [grant], veil.clock()).reasons


@dataclass(frozen=True)
class Output:
    """A computed result, ready to release: its JSON, audit details, and a stored model
    for tier 4."""

    result: dict[str, Any]
    details: dict[str, Any]
    artifact: StoredArtifact | None = None


def checked_output(
    veil: Veil, enterprise: Principal, job_id: str, kind: JobKind, answer: ChildResult
) -> Output:
    """Check the shape of the sandbox's answer (it is not trusted) and store a model."""
    message = answer.message
    result, details = message.get("result"), message.get("details")
    if not isinstance(result, dict) or not isinstance(details, dict):
        raise SandboxError("the job's process sent a malformed result")
    artifact = None
    if kind.releases_model:
        if len(answer.blobs) != 1:
            raise SandboxError("the job's process sent a malformed result")
        assert enterprise.slug is not None
        artifact = store_artifact(veil, enterprise.slug, enterprise.id, job_id, answer.blobs[0])
        result = {**result, "model_sha256": artifact.sha256}
        details = {**details, "model_sha256": artifact.sha256}
    return Output(result, details, artifact)


def release(veil: Veil, job_id: str, output: Output, query: JobQuery | None = None) -> None:
    """Release ``output`` if the grant still allows the job (``query``: as parsed by the run)."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        if not _still_ours(veil, job):  # nothing released
            return
        refused = still_allowed(veil, session, job, query)
        if not refused:
            result = {**output.result, "dataset_version": job.dataset_version}
            digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
            job.status, job.result, job.result_sha256 = JobStatus.RELEASED, result, digest
            job.finished_at = veil.clock()
            if output.artifact is not None:
                job.artifact_path = output.artifact.path
                job.artifact_wrapped_key = output.artifact.wrapped_key
                job.artifact_sha256 = output.artifact.sha256
            audit.record(
                session,
                "job.released",
                tenant_id=job.enterprise_id,
                resource=f"job:{job.id}",
                details={"result_sha256": digest, **output.details},
            )
    if not refused:
        veil.job_ended(job_id)  # committed: wake the requests waiting for it
        return
    fail_running(
        veil,
        job_id,
        "the grant changed while the job ran; nothing was released: " + "; ".join(refused),
        audit.Outcome.DENIED,
    )


def finish_code_job(
    veil: Veil, job_id: str, checked: CheckedOutput, tenant: str, query: JobQuery | None = None
) -> None:
    """Tier 5: release an output that passed, hold one the checks held (encrypted under the
    enterprise's key, ``sandbox.jobs.held_outputs``), fail a blocked one."""
    if checked.status == "pass":
        release(veil, job_id, Output(checked.result, checked.details), query)
        return
    if checked.status == "blocked":
        fail_running(
            veil,
            job_id,
            "the output checks blocked the output: " + "; ".join(checked.reasons),
            audit.Outcome.DENIED,
        )
        return
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.enterprise_id is not None
        enterprise_id = job.enterprise_id
    held = encrypt_held(veil, tenant, enterprise_id, job_id, checked.result)
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        if not _still_ours(veil, job):
            delete_held(veil, held.path)
            return
        job.status, job.result = JobStatus.HELD, None
        attach_held(job, held)
        job.output_check = checked.result["checks"]
        audit.record(
            session,
            "job.held",
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details=checked.details,
        )
    veil.job_ended(job_id)  # held for its enterprise: the run has ended


def release_held(veil: Veil, enterprise: Principal, job_id: str, reason: str) -> Job:
    """Release a held tier-5 output by hand (the grant is checked once more)."""
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.HELD
        assert enterprise.slug is not None
        held = load_held(veil, enterprise.slug, job)
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        if job.status != JobStatus.HELD:
            raise Conflict(
                Msg(
                    "job '{job_id}' has no held output (status: {status})",
                    job_id=job_id,
                    status=job.status,
                )
            )
        refused = still_allowed(veil, session, job)
        if refused:
            raise Conflict(
                Msg("the grant no longer allows this job: {reasons}", reasons="; ".join(refused))
            )
        result = {**held, "dataset_version": job.dataset_version}
        result["checks"] = {**result["checks"], "released_by_hand": reason}
        digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
        job.status, job.result, job.result_sha256 = JobStatus.RELEASED, result, digest
        job.finished_at = veil.clock()
        path = detach_held(job)
        audit.record(
            session,
            "job.released",
            actor=enterprise,
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={
                "result_sha256": digest,
                "by_hand": True,
                "reason": reason,
                "checks": job.output_check,
            },
        )
    delete_held(veil, path)
    return job


def decide_held(veil: Veil, enterprise: Principal, job_id: str, release: bool, reason: str) -> Job:
    """Release a held tier-5 output by hand, or reject it; with a reason (audited)."""
    require(enterprise, Capability.REVIEW_CODE)
    text = require_reason(reason)
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        if job is None or job.enterprise_id != enterprise.id:
            raise NotFound("job", job_id)
        refuse_if_on_node(session, job.enterprise_id)  # decided on the node
        if job.status != JobStatus.HELD:
            raise Conflict(
                Msg(
                    "job '{job_id}' has no held output (status: {status})",
                    job_id=job_id,
                    status=job.status,
                )
            )
        if release:
            job = None
        else:
            job.status, job.finished_at = JobStatus.FAILED, veil.clock()
            job.error = f"the held output was rejected by the enterprise: {text}"
            job.result = None
            path = detach_held(job)
            audit.record(
                session,
                "job.rejected",
                actor=enterprise,
                tenant_id=enterprise.id,
                resource=f"job:{job.id}",
                details={"reason": text, "checks": job.output_check},
            )
    if job is None:
        return release_held(veil, enterprise, job_id, text)
    delete_held(veil, path)  # after the rejection committed
    return job
