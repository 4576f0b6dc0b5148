"""Cross-checking what nodes released: every node release kept on the control plane is
verified again, offline, against the key its node enrolled with (``veil nodes check``).

For each job a node released or refused: the signature is the node's; the document names
that job, that node and the SHA-256 of the job's query; a release's result is the one the
control plane released; and the release says when the node read the data and which events
of the node's own audit chain (sequence number and hash) record the job, so an officer
holding the node's exported chain can find each of them there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from keys.node_auth import document_sha256
from policies.errors import VeilError
from sandbox.nodes.mirror import verify_node_document
from sandbox.store.database import Database
from sandbox.store.models import Job, JobStatus
from sandbox.store.node_models import Node


@dataclass
class ReleaseCheck:
    job_id: str
    node_id: str
    status: str
    problems: list[str] = field(default_factory=list)
    data_read_at: str | None = None
    node_events: int = 0


def check_releases(db: Database) -> list[ReleaseCheck]:
    """One check per job a node answered, oldest first."""
    with db.read() as session:
        nodes = {n.id: n for n in session.scalars(select(Node))}
        for node in nodes.values():
            session.expunge(node)
        jobs = list(
            session.scalars(
                select(Job).where(Job.node_release.is_not(None)).order_by(Job.created_at)
            )
        )
        for job in jobs:
            session.expunge(job)
    return [_check(job, nodes.get(job.worker_id or "")) for job in jobs]


def _check(job: Job, node: Node | None) -> ReleaseCheck:
    signed: dict[str, Any] = job.node_release or {}
    check = ReleaseCheck(job.id, job.worker_id or "-", job.status)
    if node is None:
        check.problems.append("no enrolled node of that id")
        return check
    try:
        doc = verify_node_document(node, signed)
    except VeilError:
        check.problems.append("the signature is not the node's")
        return check
    if doc.get("job_id") != job.id:
        check.problems.append("the document names another job")
    if "query_sha256" in doc and doc["query_sha256"] != document_sha256(job.query):
        check.problems.append("the document is about another query")
    check.data_read_at = doc.get("data_read_at")
    check.node_events = len((doc.get("audit") or {}).get("events") or [])
    if job.status == JobStatus.RELEASED:
        released = {**(doc.get("result") or {}), "dataset_version": job.dataset_version}
        digest = hashlib.sha256(json.dumps(released, sort_keys=True).encode()).hexdigest()
        if digest != job.result_sha256:
            check.problems.append("the released result is not the one the node signed")
        if not check.data_read_at:
            check.problems.append("a release without a record of the node reading the data")
        if not check.node_events:
            check.problems.append("a release naming none of the node's audit events")
    return check
