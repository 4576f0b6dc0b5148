"""Reviewed code (tier 5) on node-held datasets: the enterprise reviews on its node.

A provider submits a syft function to the control plane as for any dataset (it is parsed,
checked against the control plane's copy of the grant and run on the mock of the
declaration).  The node takes each pending request (``pending``), checks it again against
its own grants, runs it on the mock itself and keeps its own copy with the source's
SHA-256; the enterprise approves or denies it there.  The node's decision comes back signed
(``accept_decision``) and is what the provider sees.  A tier-5 job runs on the node only if
the node's own copy is approved with the same hash, whatever the control plane's copy says.
An output the node's checks hold waits on the node for the enterprise (``held``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from i18n import Msg
from policies import audit
from policies.errors import Conflict, InvalidRequest, NotFound
from sandbox.nodes.feed import NODE_ACTIVE
from sandbox.nodes.mirror import verify_node_document
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, CodeStatus, Dataset, Job, JobStatus
from sandbox.store.node_models import Node

#: Most pending requests handed to a node at once (the rest come in its next rounds).
PENDING_BATCH = 20


def request_document(code: CodeRequest) -> dict[str, Any]:
    """What a node is told about a code request: enough to check and run it on the mock."""
    return {
        "id": code.id,
        "provider_id": code.provider_id,
        "dataset_id": code.dataset_id,
        "purpose": code.purpose,
        "source": code.source,
        "sha256": code.sha256,
        "created_at": code.created_at.isoformat(),
    }


def pending(veil: Veil, node: Node, after: str | None = None) -> list[dict[str, Any]]:
    """The oldest pending code requests on ``node``'s datasets (after the id ``after``)."""
    on_node = select(Dataset.id).where(Dataset.node_id == node.id)
    query = select(CodeRequest).where(
        CodeRequest.status == CodeStatus.PENDING, CodeRequest.dataset_id.in_(on_node)
    )
    if after:
        query = query.where(CodeRequest.id > after)
    with veil.db.read() as session:
        rows = session.scalars(query.order_by(CodeRequest.id).limit(PENDING_BATCH))
        return [request_document(code) for code in rows]


def waiting_since(veil: Veil, node: Node, since: datetime) -> bool:
    """Whether a code request on ``node``'s datasets was submitted after ``since`` (a node's
    waiting claim then returns, so the node takes it in its next round)."""
    on_node = select(Dataset.id).where(Dataset.node_id == node.id)
    with veil.db.read() as session:
        found = session.scalar(
            select(CodeRequest.id)
            .where(
                CodeRequest.status == CodeStatus.PENDING,
                CodeRequest.dataset_id.in_(on_node),
                CodeRequest.created_at > since,
            )
            .limit(1)
        )
        return found is not None


def accept_decision(veil: Veil, node: Node, code_id: str, signed: dict[str, Any]) -> str:
    """Record the node's signed decision on a code request; "approved", "denied" or
    "already" (the same decision was recorded before)."""
    doc = verify_node_document(node, signed)
    approved = doc.get("approved")
    if (
        doc.get("kind") != "code_decision"
        or doc.get("id") != code_id
        or not isinstance(approved, bool)
    ):
        raise InvalidRequest(Msg("the document is not a decision on this code request"))
    decision = CodeStatus.APPROVED if approved else CodeStatus.DENIED
    reason = str(doc.get("reason") or "")[:500]
    with veil.db.transaction() as session:
        code = session.get(CodeRequest, code_id, with_for_update=True)
        dataset = session.get(Dataset, code.dataset_id) if code is not None else None
        if code is None or dataset is None or dataset.node_id != node.id:
            raise NotFound("code request", code_id)
        if code.status == decision and code.review_reason == reason:
            return "already"
        if code.status != CodeStatus.PENDING:
            raise Conflict(
                Msg(
                    "code request '{code_id}' was already {status}",
                    code_id=code_id,
                    status=code.status,
                ),
                code="code_decided",
            )
        if approved and doc.get("sha256") != code.sha256:
            raise Conflict(Msg("the node approved another source"), code="code_mismatch")
        code.status, code.review_reason = decision, reason
        code.reviewer_id, code.decided_at = node.enterprise_id, veil.clock()
        audit.record(
            session,
            "code.approved" if approved else "code.denied",
            tenant_id=node.enterprise_id,
            resource=f"code:{code.id}",
            details={
                "code_sha256": code.sha256,
                "reason": reason,
                "provider_id": code.provider_id,
                "node_id": node.id,
                "node_signature": signed["signature"],
            },
        )
    return str(decision)


def held(veil: Veil, node: Node, job_id: str) -> None:
    """The node's checks held a running job's output for its enterprise to decide (there):
    the provider sees the job held until the node sends its release or failure."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.worker_id != node.id or job.status not in NODE_ACTIVE:
            raise Conflict(Msg("job {id} is not running on this node", id=job_id),
                           code="not_claimed")  # fmt: skip
        if job.status == JobStatus.HELD:
            return
        job.status = JobStatus.HELD
        audit.record(
            session,
            "job.held",
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={"node_id": node.id, "reason": "held on the node for the enterprise"},
        )
