"""The node's side of a job: decided here again, run here, answered once, signed.

Whatever the control plane says, a job runs on this node only if this node's own records
allow it: the provider holds a grant *here* (made by the enterprise on this node) covering
the dataset, tier, columns and purpose, and this node's own ledger has the budget
(``sandbox.jobs.submit.submit_job`` on the node's core: the same decision and debit as any job).
A job id is taken once (``node_jobs``): a replayed hand-over is never run again, and the
one answer this node signed is what it sends, however often it is asked.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from i18n import Msg
from keys.node_auth import document_sha256
from node.protocol.signing import sign
from node.work.models import NodeJob, NodeJobState
from policies import audit
from policies.errors import Denied, VeilError
from policies.principals import Principal, Role, Status
from sandbox.jobs.artifacts import load_artifact
from sandbox.jobs.submit import JobSubmission, submit_job
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, Job, JobStatus

log = logging.getLogger(__name__)
#: A local job's endings that are answered.  A held output (tier 5) is not one: it waits
#: here for the enterprise to release or reject it (``held``), then is answered.
_DONE = frozenset({JobStatus.RELEASED, JobStatus.FAILED, JobStatus.DENIED})


def take(veil: Veil, node_id: str, enterprise_id: str, job: dict[str, Any]) -> NodeJobState:
    """Decide and queue a job the control plane handed over; refuse it (signed) otherwise."""
    control_id = str(job.get("id", ""))[:40]
    try:
        with veil.db.transaction() as session:
            session.add(NodeJob(control_job_id=control_id, state=NodeJobState.TAKEN,
                                created_at=veil.clock()))  # fmt: skip
    except IntegrityError:
        return _replayed(veil, control_id)
    refused = _refusal(veil, enterprise_id, job)
    if refused is not None:
        return _answer_refusal(veil, node_id, control_id, job, refused)
    with veil.db.read() as session:
        provider = session.get(Principal, job["provider_id"])
        assert provider is not None
        session.expunge(provider)
    try:
        submission = JobSubmission(
            dataset_id=str(job["dataset_id"]),
            purpose=str(job["purpose"]),
            query=dict(job["query"]),
            tier=int(job["tier"]),
            epsilon=float(job["epsilon"]),
            delta=float(job["delta"]),
        )
    except (TypeError, ValueError):
        return _answer_refusal(veil, node_id, control_id, job,
                               Msg("the job document is incomplete"))  # fmt: skip
    try:
        local = submit_job(veil, provider, submission)
    except Denied as exc:
        return _answer_refusal(veil, node_id, control_id, job, "; ".join(exc.reasons))
    except VeilError as exc:
        return _answer_refusal(veil, node_id, control_id, job, str(exc))
    with veil.db.transaction() as session:
        row = session.get(NodeJob, control_id)
        assert row is not None
        row.local_job_id, row.state = local.id, NodeJobState.SUBMITTED
    return NodeJobState.SUBMITTED


def _replayed(veil: Veil, control_id: str) -> NodeJobState:
    """A job id seen before: never run again; its answer (if any) is sent again."""
    with veil.db.transaction() as session:
        row = session.get(NodeJob, control_id)
        assert row is not None
        audit.record(
            session,
            "node.job_replayed",
            outcome=audit.Outcome.DENIED,
            resource=f"job:{control_id}",
            details={"state": row.state},
        )
        if row.state == NodeJobState.ANSWERED:
            row.delivered_at = None  # send the same signed answer again
        return NodeJobState(row.state)


def _refusal(veil: Veil, enterprise_id: str, job: dict[str, Any]) -> str | None:
    """Why this node will not even consider the job (None: decide it as any job)."""
    required = ("provider_id", "dataset_id", "purpose", "query", "tier", "epsilon", "delta")
    if any(key not in job for key in required) or not isinstance(job.get("query"), dict):
        return Msg("the job document is incomplete")
    if job.get("query_sha256") not in (None, document_sha256(job["query"])):
        return Msg("the job's query does not match its digest")
    with veil.db.read() as session:
        provider = session.get(Principal, str(job["provider_id"]))
        dataset = session.get(Dataset, str(job["dataset_id"]))
        if provider is None or provider.role != Role.PROVIDER:
            return Msg("the provider is unknown to this node")
        if provider.status != Status.ACTIVE:
            return Msg("the provider is suspended")
        if dataset is None or dataset.enterprise_id != enterprise_id:
            return Msg("the dataset is not on this node")
    return None


def _answer_refusal(
    veil: Veil, node_id: str, control_id: str, job: dict[str, Any], reason: str
) -> NodeJobState:
    document = {
        "kind": "fail",
        "job_id": control_id,
        "refused": True,
        "reason": reason,
        "query_sha256": document_sha256(job.get("query")),
        "data_read_at": None,
    }
    signed = {"kind": "fail", **sign(veil, node_id, document)}
    with veil.db.transaction() as session:
        row = session.get(NodeJob, control_id)
        assert row is not None
        row.state, row.outcome = NodeJobState.ANSWERED, signed
        audit.record(
            session,
            "node.job_refused",
            outcome=audit.Outcome.DENIED,
            resource=f"job:{control_id}",
            details={"reason": reason, "provider_id": job.get("provider_id")},
        )
    return NodeJobState.ANSWERED


def answer_finished(veil: Veil, node_id: str) -> int:
    """Sign the answer of each local job that ended; how many were answered now."""
    with veil.db.read() as session:
        pending = list(
            session.execute(
                select(NodeJob.control_job_id, Job)
                .join(Job, Job.id == NodeJob.local_job_id)
                .where(NodeJob.state == NodeJobState.SUBMITTED, Job.status.in_(_DONE))
            )
        )
        for _, job in pending:
            session.expunge(job)
    for control_id, job in pending:
        signed = _release(veil, node_id, control_id, job)
        with veil.db.transaction() as session:
            row = session.get(NodeJob, control_id)
            assert row is not None
            if row.state == NodeJobState.SUBMITTED:
                row.state, row.outcome = NodeJobState.ANSWERED, signed
    return len(pending)


def _release(veil: Veil, node_id: str, control_id: str, job: Job) -> dict[str, Any]:
    """The signed release of a released job, or the signed failure of any other ending."""
    with veil.db.read() as session:
        events = [
            {"seq": e.seq, "action": e.action, "hash": e.hash}
            for e in session.scalars(
                select(audit.AuditEvent)
                .where(audit.AuditEvent.resource == f"job:{job.id}")
                .order_by(audit.AuditEvent.seq)
            )
        ]
        head = session.get(audit.AuditHead, 1)
        trail = {"events": events, "head_seq": head.seq if head else 0,
                 "head_hash": head.hash if head else ""}  # fmt: skip
    read_at = job.data_read_at.isoformat() if job.data_read_at else None
    common = {"job_id": control_id, "local_job_id": job.id, "tier": job.tier,
              "query_sha256": document_sha256(job.query), "data_read_at": read_at,
              "audit": trail}  # fmt: skip
    if job.status == JobStatus.RELEASED and job.result is not None:
        document = {"kind": "release", **common, "result": job.result,
                    "output_check": job.output_check}  # fmt: skip
        if job.artifact_path and job.artifact_wrapped_key:  # tier 4: the released model
            document["model"] = _model(veil, job)
        return {"kind": "release", **sign(veil, node_id, document)}
    reason = job.error or (
        "; ".join(job.reasons) if job.reasons else Msg("the node did not release a result")
    )
    document = {"kind": "fail", **common, "refused": job.status == JobStatus.DENIED,
                "reason": reason}  # fmt: skip
    return {"kind": "fail", **sign(veil, node_id, document)}


def _model(veil: Veil, job: Job) -> dict[str, str]:
    """A released model's weights, for the provider (the signature covers them)."""
    with veil.db.read() as session:
        enterprise = session.get(Principal, job.enterprise_id)
        assert enterprise is not None and enterprise.slug is not None
        slug = enterprise.slug
    assert job.artifact_path is not None and job.artifact_wrapped_key is not None
    weights = load_artifact(veil, slug, job.id, job.artifact_path, job.artifact_wrapped_key)
    digest = hashlib.sha256(weights).hexdigest()
    return {"sha256": digest, "base64": base64.b64encode(weights).decode()}


def progress(veil: Veil) -> list[tuple[str, int, int]]:
    """(control job id, epoch, epochs) of the jobs training here now (tier 4)."""
    with veil.db.read() as session:
        rows = session.execute(
            select(NodeJob.control_job_id, Job.progress)
            .join(Job, Job.id == NodeJob.local_job_id)
            .where(NodeJob.state == NodeJobState.SUBMITTED, Job.progress.is_not(None))
        )
        found = []
        for control_id, shown in rows:
            epoch, epochs = (shown or {}).get("epoch"), (shown or {}).get("epochs")
            if isinstance(epoch, int) and isinstance(epochs, int):
                found.append((control_id, epoch, epochs))
        return found


def held(veil: Veil) -> list[str]:
    """The control job ids whose output the checks hold here for the enterprise (tier 5)."""
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(NodeJob.control_job_id)
                .join(Job, Job.id == NodeJob.local_job_id)
                .where(NodeJob.state == NodeJobState.SUBMITTED, Job.status == JobStatus.HELD)
            )
        )


def in_flight(veil: Veil) -> bool:
    """Whether a job handed over is still being decided or computed here (a held output
    waits for a person, not for the worker: not in flight)."""
    with veil.db.read() as session:
        taken = select(NodeJob.control_job_id).where(NodeJob.state == NodeJobState.TAKEN)
        computing = (
            select(NodeJob.control_job_id)
            .join(Job, Job.id == NodeJob.local_job_id)
            .where(NodeJob.state == NodeJobState.SUBMITTED, Job.status != JobStatus.HELD)
        )
        return any(session.scalar(q.limit(1)) is not None for q in (taken, computing))


def undelivered(veil: Veil) -> list[tuple[str, dict[str, Any]]]:
    """The signed answers the control plane has not acknowledged yet."""
    with veil.db.read() as session:
        rows = session.scalars(
            select(NodeJob).where(
                NodeJob.state == NodeJobState.ANSWERED, NodeJob.delivered_at.is_(None)
            )
        )
        return [(r.control_job_id, dict(r.outcome or {})) for r in rows]


def delivered(veil: Veil, control_id: str) -> None:
    with veil.db.transaction() as session:
        row = session.get(NodeJob, control_id)
        if row is not None:
            row.delivered_at = veil.clock()
