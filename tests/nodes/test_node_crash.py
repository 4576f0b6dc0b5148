"""A node that stops between the control plane's claim and finishing taking the job loses
nothing, and decides and debits the job once.

The claim moves the job to ``running`` under the node's id on the control plane, which only
ever hands out queued jobs; the node takes it in three commits (``node.work.jobs.take``).  If the
node dies before, or between, them (or the claim's answer is lost on the way), the job
stayed ``running`` on the control plane for ever, its budget held; ``node.work.recovery`` takes
it again when the link starts.  ``reliability/nodes.py`` SIGKILLs a real node at that
moment; these tests play each point in-process."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from node.link.rounds import NodeLink
from node.work.models import NodeJob, NodeJobState
from policies.principals import Principal
from sandbox.jobs.submit import JobSubmission, submit_job
from sandbox.store.models import Job, JobStatus
from tests.nodes.conftest import PURPOSE, NodeWorld

pytestmark = pytest.mark.integration

MEAN = [{"kind": "mean", "column": "temperature_c"}]


def _die_after(world: NodeWorld, claimed: dict, point: str) -> None:
    """What the node had committed of its take when it died."""
    if point == "claimed":
        return  # nothing: the claim's answer never reached the node, or it died at once
    with world.node.db.transaction() as session:
        session.add(NodeJob(control_job_id=claimed["id"], state=NodeJobState.TAKEN,
                            created_at=world.node.clock()))  # fmt: skip
    if point == "decided":  # the local decision and debit committed, the link did not
        with world.node.db.read() as session:
            provider = session.get(Principal, world.provider_id)
            assert provider is not None
            session.expunge(provider)
        submission = JobSubmission(
            dataset_id=world.dataset_id, purpose=PURPOSE, query=claimed["query"], tier=3,
            epsilon=claimed["epsilon"], delta=claimed["delta"],
        )  # fmt: skip
        submit_job(world.node, provider, submission)


@pytest.mark.parametrize("point", ["claimed", "taken", "decided"])
def test_a_job_claimed_just_before_the_node_died_still_runs_once(
    node_world: NodeWorld, point: str
) -> None:
    job = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    claimed = node_world.link.control.call("POST", "/node/v1/jobs/claim")
    assert claimed["id"] == job["id"]
    _die_after(node_world, claimed, point)
    config = node_world.config
    restarted = NodeLink(node_world.node, node_world.link.control, config.node_id,
                         config.enterprise_id)  # fmt: skip
    deadline = time.monotonic() + 30
    while node_world.provider.get_job(job["id"])["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the job stayed running on the control plane"
        restarted.run_round()
        time.sleep(0.05)
    assert node_world.provider.get_job(job["id"])["status"] == "released"
    with node_world.node.db.read() as session:
        assert session.get(NodeJob, job["id"]) is not None
        assert session.scalar(select(func.count()).select_from(Job)) == 1  # decided once
        assert session.scalars(select(Job.status)).one() == JobStatus.RELEASED
    [grant] = node_world.enterprise.list_grants()
    assert grant["budget"]["epsilon_spent"] == pytest.approx(0.25)  # debited once
