"""Jobs on node-held datasets: handed to their node, and taken back only as signed releases.

The control plane's own workers never claim these jobs (``sandbox.jobs.runner``); a node claims
them over the node protocol.  A claimed job is ``running`` under the node's id.  It ends
when the node sends a release its key server signed (checked here against the node's
public key, the job and its query), or a refusal; a job never ends twice, so no result is
released twice.  While the node is away its jobs stay queued, their budget held, and
expire with their grant (``sandbox.jobs.submit.cancel_expired``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from i18n import Msg
from keys.node_auth import document_sha256
from policies import audit
from policies.errors import Conflict, InvalidRequest
from policies.grants import DELTA_UNIT, EPSILON_UNIT, BudgetDebit
from sandbox.jobs.outcomes import still_allowed
from sandbox.jobs.refunds import fail_with_refund
from sandbox.jobs.suspension import fail_jobs_of_suspended
from sandbox.nodes.mirror import verify_node_document
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, Job, JobStatus
from sandbox.store.node_models import Node

#: The states of a job a node claimed and has not ended: computing, or held there for its
#: enterprise to decide (``sandbox.nodes.code.held``).
NODE_ACTIVE = frozenset({JobStatus.RUNNING, JobStatus.HELD})


def job_document(job: Job) -> dict[str, Any]:
    """What a node is told about a job (it decides again from this, not from our decision)."""
    return {
        "id": job.id,
        "provider_id": job.provider_id,
        "enterprise_id": job.enterprise_id,
        "dataset_id": job.dataset_id,
        "dataset_version": job.dataset_version,
        "grant_id": job.grant_id,
        "purpose": job.purpose,
        "tier": job.tier,
        "query": job.query,
        "query_sha256": document_sha256(job.query),
        "epsilon": job.epsilon / EPSILON_UNIT,
        "delta": job.delta / DELTA_UNIT,
        "created_at": job.created_at.isoformat(),
    }


def claim(veil: Veil, node: Node) -> dict[str, Any] | None:
    """Move the oldest queued job on ``node``'s datasets to running for it; its document."""
    on_node = select(Dataset.id).where(Dataset.node_id == node.id)
    with veil.db.transaction() as session:
        fail_jobs_of_suspended(session, veil.clock())  # as the control plane's own workers
        job = session.scalar(
            select(Job)
            .where(Job.status == JobStatus.QUEUED, Job.dataset_id.in_(on_node))
            .order_by(Job.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if job is None:
            return None
        job.status, job.worker_id = JobStatus.RUNNING, node.id
        job.started_at, job.node_taken_at = veil.clock(), None  # this hand-over's start
        job.attempts += 1
        return job_document(job)


def queued(veil: Veil, node: Node) -> bool:
    """Whether a job is queued on ``node``'s datasets (read only: a waiting claim looks with
    this before it takes the write lock to ``claim`` one)."""
    on_node = select(Dataset.id).where(Dataset.node_id == node.id)
    with veil.db.read() as session:
        found = session.scalar(
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED, Job.dataset_id.in_(on_node))
            .limit(1)
        )
        return found is not None


def taken(veil: Veil, node: Node, job_id: str) -> None:
    """The node has the job it claimed: it is not queued again."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.worker_id != node.id or job.status not in NODE_ACTIVE:
            raise Conflict(Msg("job {id} is not this node's", id=job_id), code="not_claimed")
        job.node_taken_at = job.node_taken_at or veil.clock()


def running(veil: Veil, node: Node) -> list[dict[str, Any]]:
    """The documents of the jobs running under ``node``'s claim: a node that stopped (or lost
    the claim's answer) before recording a claimed job takes it again from these."""
    with veil.db.read() as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.worker_id == node.id)
            .order_by(Job.created_at)
        )
        return [job_document(job) for job in jobs]


def _running_job(veil: Veil, node: Node, job_id: str, signed: dict[str, Any]) -> Job | None:
    """The job the node's document ends, or None when that document ended it already."""
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        if job is None or job.worker_id != node.id:
            raise Conflict(Msg("job {id} is not this node's", id=job_id), code="not_claimed")
        if job.status in NODE_ACTIVE:
            session.expunge(job)
            return job
        if job.node_release == signed:
            return None  # the node sent it again (it did not hear our answer): nothing to do
        raise Conflict(Msg("job {id} has ended already", id=job_id), code="job_ended")


def accept_release(veil: Veil, node: Node, job_id: str, signed: dict[str, Any]) -> str:
    """Release a job's result the node signed; "released", "already" or "refused"."""
    doc = verify_node_document(node, signed)
    job = _running_job(veil, node, job_id, signed)
    if job is None:
        return "already"
    _check_bound(doc, job)
    result = doc.get("result")
    if not isinstance(result, dict):
        raise InvalidRequest(Msg("a release carries its result as a JSON object"))
    now = veil.clock()
    with veil.db.transaction() as session:
        row = session.get(Job, job_id, with_for_update=True)
        assert row is not None
        if row.status not in NODE_ACTIVE or row.worker_id != node.id:
            raise Conflict(Msg("job {id} has ended already", id=job_id), code="job_ended")
        refused = still_allowed(veil, session, row)
        row.node_release = signed
        row.data_read_at = _when(doc.get("data_read_at")) or row.data_read_at
        if refused:
            reason = "the grant changed while the job ran; nothing was released: "
            row.status, row.error, row.finished_at = (
                JobStatus.FAILED,
                reason + "; ".join(refused),
                now,
            )
            audit.record(session, "job.failed", outcome=audit.Outcome.DENIED,
                         tenant_id=row.enterprise_id, resource=f"job:{row.id}",
                         details={"reason": row.error, "node_id": node.id})  # fmt: skip
            return "refused"
        if isinstance(doc.get("model"), dict):
            row.artifact_path, row.artifact_sha256 = _store_model(veil, job_id, doc["model"])
            row.artifact_wrapped_key = None  # a release: stored as the provider receives it
        released = {**result, "dataset_version": row.dataset_version}
        digest = hashlib.sha256(json.dumps(released, sort_keys=True).encode()).hexdigest()
        row.status, row.result, row.result_sha256 = JobStatus.RELEASED, released, digest
        row.output_check = doc.get("output_check")
        row.finished_at = now
        audit.record(
            session,
            "job.released",
            tenant_id=row.enterprise_id,
            resource=f"job:{row.id}",
            details={
                "result_sha256": digest,
                "node_id": node.id,
                "node_signature": signed["signature"],
                "node_audit": doc.get("audit"),
            },
        )
    return "released"


def accept_failure(veil: Veil, node: Node, job_id: str, signed: dict[str, Any]) -> str:
    """End a job the node refused or could not compute, with the node's reason."""
    doc = verify_node_document(node, signed)
    job = _running_job(veil, node, job_id, signed)
    if job is None:
        return "already"
    if doc.get("job_id") != job_id:
        raise InvalidRequest(Msg("the document is about another job"))
    reason = str(doc.get("reason") or "")[:500]
    with veil.db.transaction() as session:
        row = session.get(Job, job_id, with_for_update=True)
        assert row is not None
        if row.status not in NODE_ACTIVE or row.worker_id != node.id:
            raise Conflict(Msg("job {id} has ended already", id=job_id), code="job_ended")
        row.node_release = signed
        row.data_read_at = _when(doc.get("data_read_at"))
        why = f"the enterprise's node did not release a result: {reason}"
        details = {"node_id": node.id, "refused": bool(doc.get("refused"))}
        paid = session.scalar(select(BudgetDebit.id).where(BudgetDebit.job_id == job_id).limit(1))
        if paid is not None:
            # Not the provider's doing when the node read nothing: the debit comes back.
            fail_with_refund(session, row, why, veil.clock(), details)
            return "failed"
        row.status, row.error, row.finished_at = JobStatus.FAILED, why, veil.clock()
        audit.record(session, "job.failed", outcome=audit.Outcome.DENIED,
                     tenant_id=row.enterprise_id, resource=f"job:{row.id}",
                     details={"reason": why, **details})  # fmt: skip
    return "failed"


def progress(veil: Veil, node: Node, job_id: str, body: dict[str, Any]) -> None:
    """A training job's epoch, as the node reports it (shown to the provider while it runs)."""
    epoch, epochs = body.get("epoch"), body.get("epochs")
    if not (isinstance(epoch, int) and isinstance(epochs, int) and 0 < epoch <= epochs <= 10_000):
        raise InvalidRequest(Msg("progress is an epoch between 1 and its number of epochs"))
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.worker_id != node.id or job.status != JobStatus.RUNNING:
            raise Conflict(Msg("job {id} is not running on this node", id=job_id),
                           code="not_claimed")  # fmt: skip
        job.progress = {"epoch": epoch, "epochs": epochs, "at": veil.clock().isoformat()}


def _check_bound(doc: dict[str, Any], job: Job) -> None:
    """A release answers exactly this job: its id, and the query the provider submitted."""
    if doc.get("job_id") != job.id or doc.get("query_sha256") != document_sha256(job.query):
        raise InvalidRequest(Msg("the release is about another job or another query"))


def _store_model(veil: Veil, job_id: str, model: dict[str, Any]) -> tuple[str, str]:
    """Keep a node's released model (tier 4) for its provider to download."""
    try:
        weights = base64.b64decode(str(model.get("base64", "")), validate=True)
    except binascii.Error:
        raise InvalidRequest(Msg("the release's model is not base64")) from None
    digest = hashlib.sha256(weights).hexdigest()
    if digest != model.get("sha256"):
        raise InvalidRequest(Msg("the release's model does not match its digest"))
    relative = Path("releases") / f"{job_id}.safetensors"
    path = veil.settings.objects_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(weights)
    partial.replace(path)
    return str(relative), digest


def _when(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
