"""The set-up ``node_bench`` measures: a control plane and enterprise nodes on loopback.

One control plane (a Veil core with its embedded OpenBao, its API on a loopback port and
its embedded job worker) holds one enterprise's dataset itself, as today ("plain"), and
enrols nodes one by one: each node is a Veil core of its own (its own directory, database
and embedded OpenBao, whose credentials only it has), enrolled with a real one-time code,
its dataset uploaded on its own API and granted there to the same provider, and its link
thread polling the control plane every ``poll_s``.  Everything runs in this process
(threads; each job's computation in its own sandbox process) and stops with the world.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.link.rounds import NodeLink
from node.setup.provision import init_node, node_settings, running_node
from node.work.models import NodeJob
from policies import audit
from sandbox.client import VeilClient
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION, production_log
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.models import Job, JobStatus

PURPOSE = "process-optimization"
COLUMNS = ["machine", "shift", "temperature_c", "cycle_time_s", "defects"]
#: The tier-3 query every job runs: a DP count and mean temperature grouped by shift.
AGGREGATES = [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}]
GROUP_BY = "shift"
EPSILON = 0.01
ROWS = 2_000
FINAL = frozenset({JobStatus.RELEASED, JobStatus.FAILED, JobStatus.DENIED, JobStatus.HELD})
# Only what these settings name; the rest of the environment (VEIL_VAULT_ADDR, a
# PostgreSQL URL) must not send the bench's cores elsewhere.
LOCAL: dict[str, Any] = {
    "vault_addr": None,
    "database_url": None,
    "job_poll_interval_s": 0.01,
    "commitment_letters": False,  # letters: once per grant, not measured
}


@dataclass(frozen=True)
class NodeRows:
    record: NodeJob
    local: Job
    signed_at: datetime | None


@dataclass
class BenchNode:
    """One enrolled, running node: its core, its link and its dataset (known to the CP)."""

    veil: Veil
    link: NodeLink
    dataset_id: str


@dataclass
class NodeBenchWorld:
    home: Path
    poll_s: float
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    nodes: list[BenchNode] = field(default_factory=list)

    def __enter__(self) -> NodeBenchWorld:
        try:
            self._start()
        except BaseException:
            self.stack.close()  # what had started stops
            raise
        return self

    def _start(self) -> None:
        settings = Settings(data_dir=self.home / "control-plane", **LOCAL)
        self.cp = self.stack.enter_context(open_veil(settings))
        self.url = self.stack.enter_context(ApiThread(settings, self.cp))
        token = bootstrap_operator(self.cp)
        assert token is not None
        self.operator = self.stack.enter_context(VeilClient(self.url, token))
        made = self.operator.create_provider("Bench Analytics")
        self.provider_id = str(made["id"])
        self.provider = self.stack.enter_context(
            VeilClient(self.url, self.operator.issue_token(self.provider_id), timeout=120)
        )
        plain = self.operator.create_enterprise("Plain Works", f"plain-{uuid.uuid4().hex[:8]}")
        owner = self.stack.enter_context(
            VeilClient(self.url, self.operator.issue_token(plain["id"]))
        )
        self.plain_dataset = self._dataset_and_grant(owner)

    def __exit__(self, *exc: object) -> None:
        self.stack.close()  # links, node cores and their OpenBaos, then the control plane

    def _dataset_and_grant(self, owner: VeilClient) -> str:
        dataset = owner.create_dataset(DECLARATION["name"], DECLARATION["columns"],
                                       epsilon_cap=100.0)  # fmt: skip
        owner.upload(dataset["id"], production_log(ROWS, seed=11))
        owner.create_grant(
            self.provider_id, [dataset["id"]], COLUMNS, [3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), epsilon=100.0,
        )  # fmt: skip
        return str(dataset["id"])

    def add_node(self) -> BenchNode:
        """Enrol, start and provision one more node (its link thread polling)."""
        index = len(self.nodes) + 1
        made = self.operator.create_node_enterprise(
            f"Node Works {index}", f"node{index}-{uuid.uuid4().hex[:8]}"
        )
        node_dir = self.home / f"node-{index}"
        settings = node_settings(node_dir, **LOCAL)
        _, token = init_node(node_dir, self.url, made["enrolment_code"], settings)
        veil, link = self.stack.enter_context(
            running_node(node_dir, settings, poll_s=self.poll_s, link=False)
        )
        # The enterprise's console/API on its node: only for the set-up.
        with ApiThread(settings, veil) as node_url, VeilClient(node_url, token) as enterprise:
            link.run_round()  # the provider directory reaches the node
            dataset_id = self._dataset_and_grant(enterprise)
            link.run_round()  # the catalog and the signed grant reach the control plane
        link.start()
        node = BenchNode(veil, link, dataset_id)
        self.nodes.append(node)
        return node

    def submit(self, dataset_id: str) -> tuple[str, datetime]:
        """Submit the query as the provider (HTTP); the job's id and when it was sent."""
        sent = datetime.now(UTC)
        job = self.provider.submit_job(dataset_id, PURPOSE, EPSILON, AGGREGATES, GROUP_BY)
        return str(job["id"]), sent

    def wait(self, job_ids: list[str], timeout: float = 300.0) -> dict[str, Job]:
        """The control plane's rows of ``job_ids`` once every one has ended (released
        ones only; anything else is an error of the set-up, raised)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.cp.db.read() as session:
                jobs = [session.get(Job, i) for i in job_ids]
                if all(j is not None and j.status in FINAL for j in jobs):
                    for job in jobs:
                        session.expunge(job)
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(job_ids)} jobs did not end in {timeout:.0f} s")
            time.sleep(0.005)  # the figures come from the rows' timestamps, not this poll
        ended = {j.id: j for j in jobs if j is not None}
        bad = [f"{j.id}: {j.status} {j.error or j.reasons}" for j in ended.values()
               if j.status != JobStatus.RELEASED]  # fmt: skip
        if bad:
            raise RuntimeError("jobs not released: " + "; ".join(bad[:3]))
        return ended

    def node_rows(self, node: BenchNode, control_id: str) -> NodeRows:
        """The node's record of a control-plane job, its local job, and when the node
        signed its release (its ``node.signed`` audit event)."""
        with node.veil.db.read() as session:
            record = session.get(NodeJob, control_id)
            assert record is not None and record.local_job_id is not None
            local = session.get(Job, record.local_job_id)
            assert local is not None
            signed_at = session.scalar(
                select(audit.AuditEvent.at).where(
                    audit.AuditEvent.action == "node.signed",
                    audit.AuditEvent.resource == f"node:release-{control_id}"[:120],
                )
            )
            session.expunge_all()
        return NodeRows(record, local, signed_at)


def ms(later: datetime | None, earlier: datetime | None) -> float:
    """Milliseconds between two timestamps (NaN when one is missing)."""
    if later is None or earlier is None:
        return float("nan")
    return (later - earlier).total_seconds() * 1000


#: The job's own run (sandbox, compute, local release): the same work on either side.
PLAIN_RUN = "run + release"
NODE_RUN = "run + release on the node"


def plain_phases(sent: datetime, job: Job) -> dict[str, float]:
    """A plain job's phases from its row: submit, wait for the worker, run and release."""
    return {
        "submit (HTTP, decide, queue)": ms(job.created_at, sent),
        "wait for a worker": ms(job.started_at, job.created_at),
        PLAIN_RUN: ms(job.finished_at, job.started_at),
    }


def node_phases(sent: datetime, job: Job, rows: NodeRows) -> dict[str, float]:
    """A node job's phases from the control plane's row and the node's rows (one clock:
    every part runs on this machine)."""
    record, local = rows.record, rows.local
    return {
        "submit (HTTP, decide, queue)": ms(job.created_at, sent),
        "wait for the node's claim (poll)": ms(job.started_at, job.created_at),
        "hand-over to the node (claim answer)": ms(record.created_at, job.started_at),
        "node decides again (take)": ms(local.created_at, record.created_at),
        "wait for the node's worker": ms(local.started_at, local.created_at),
        NODE_RUN: ms(local.finished_at, local.started_at),
        "answer: link notices + node signs": ms(rows.signed_at, local.finished_at),
        "answer: send, CP verifies + releases": ms(job.finished_at, rows.signed_at),
    }
