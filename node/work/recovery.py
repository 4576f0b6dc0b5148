"""Jobs this node claimed but did not finish taking, found again after it stopped.

A claim moves the job to ``running`` under the node's id on the control plane, which never
hands it out again.  Taking it here is three commits (``node.work.jobs.take``: the ``taken``
row, the local decision and debit, the link between them).  If the node stops (SIGKILL, a
power cut) or loses the claim's answer in between, the job would stay running on the
control plane for ever.  So, when the link starts and after each failed round, the node
asks for the jobs running under its claim (``GET /node/v1/jobs/running``) and takes again
those it did not finish taking: a job it has no row of is taken as new; a ``taken`` row
whose local job was decided and debited is linked to that job (never decided or debited
twice); a ``taken`` row with nothing after it is taken anew.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.work import jobs
from node.work.models import NodeJob, NodeJobState
from policies import audit
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job


def lost(veil: Veil, control_ids: list[str]) -> set[str]:
    """Those of ``control_ids`` this node has no row of, or did not finish taking."""
    with veil.db.read() as session:
        done = set(
            session.scalars(
                select(NodeJob.control_job_id).where(
                    NodeJob.control_job_id.in_(control_ids),
                    (NodeJob.state != NodeJobState.TAKEN) | NodeJob.local_job_id.is_not(None),
                )
            )
        )
    return set(control_ids) - done


def take_again(veil: Veil, node_id: str, enterprise_id: str, job: dict[str, Any]) -> str:
    """Finish taking a job this node lost (see the module); the job's state here now."""
    control_id = str(job.get("id", ""))[:40]
    with veil.db.transaction() as session:
        row = session.get(NodeJob, control_id)
        if row is not None and (row.state != NodeJobState.TAKEN or row.local_job_id):
            return str(row.state)  # taken meanwhile: nothing lost
        local = _decided(session, row, job) if row is not None else None
        if row is not None and local is not None:
            row.local_job_id, row.state = local.id, NodeJobState.SUBMITTED
        elif row is not None:
            session.delete(row)  # nothing was decided: taken anew below
        audit.record(
            session,
            "node.job_resumed",
            resource=f"job:{control_id}",
            details={"local_job_id": local.id if local else None,
                     "how": "linked to its local job" if local else "taken anew"},
        )  # fmt: skip
    if local is not None:
        return NodeJobState.SUBMITTED  # its answer is signed when it ends (answer_finished)
    return jobs.take(veil, node_id, enterprise_id, job)


def _decided(session: Session, row: NodeJob, job: dict[str, Any]) -> Job | None:
    """The local job the interrupted take decided (and debited, if allowed), if it got that
    far: made after the ``taken`` row, for this provider, dataset, purpose and query, and
    linked to no other control-plane job (local jobs come from ``take`` only, one at a time)."""
    linked = select(NodeJob.local_job_id).where(NodeJob.local_job_id.is_not(None))
    candidates = session.scalars(
        select(Job)
        .where(
            Job.provider_id == str(job.get("provider_id")),
            Job.dataset_id == str(job.get("dataset_id")),
            Job.purpose == str(job.get("purpose")),
            Job.created_at >= row.created_at,
            Job.id.not_in(linked),
        )
        .order_by(Job.created_at)
    )
    return next((c for c in candidates if c.query == job.get("query")), None)
