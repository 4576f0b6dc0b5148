"""A provider's confirmed exit (docs/programme.md, "Scorecards and exit") when the grants
it held are an enterprise node's: the control plane revokes its copy of each grant, shreds
the node's signed releases it kept for the provider, and suspends the provider; the node,
which keeps its own grant (it is the enterprise's to revoke), refuses the provider's jobs
once its mirror of the provider directory says suspended."""

from __future__ import annotations

import uuid

import pytest

from node.work.jobs import take
from node.work.models import NodeJob
from policies.grants import Grant
from policies.principals import Principal, Status
from sandbox.client import ApiError, VeilClient
from sandbox.store.models import Job
from tests.nodes.conftest import PURPOSE, NodeWorld

pytestmark = pytest.mark.integration

MEAN = [{"kind": "mean", "column": "temperature_c"}]
ONLY_BUREAU = {"kpi": 0, "ratings": 0, "bureau": 1, "assessors": 0}


def _failed_period(bureau: VeilClient, provider_id: str) -> None:
    period = bureau.open_period(f"P-{uuid.uuid4().hex[:6]}", weights=ONLY_BUREAU)
    bureau.assess_provider(provider_id, 10, "no deliverable this quarter")
    bureau.close_period(period["id"])


def test_an_exit_revokes_node_held_grants_and_the_node_refuses_the_provider(
    node_world: NodeWorld,
) -> None:
    released = node_world.submit(MEAN)
    assert released["status"] == "released"
    operator = node_world.operator
    bureau = VeilClient(node_world.cp_url, operator.issue_token(operator.create_bureau("B")["id"]))
    _failed_period(bureau, node_world.provider_id)
    _failed_period(bureau, node_world.provider_id)
    (proposal,) = [e for e in bureau.list_exits() if e["provider_id"] == node_world.provider_id]
    bureau.decide_exit(proposal["id"], True, "failed two quarters")

    with node_world.cp.db.read() as session:
        grant = session.get(Grant, node_world.grant_id)
        assert grant is not None and grant.revoked_at is not None  # the control plane's copy
        job = session.get(Job, released["id"])
        assert job is not None and job.result is None and job.node_release is None
        provider = session.get(Principal, node_world.provider_id)
        assert provider is not None and provider.status == Status.SUSPENDED
    with pytest.raises(ApiError) as refused:  # its tokens are refused
        node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    assert refused.value.status in (401, 403)

    # The node's own check: a job that reached it anyway (as from a compromised control
    # plane) is refused once the directory it mirrors says the provider is suspended.
    node_world.link.publisher._providers_at = None  # read the directory at once
    node_world.sync()
    document = {"id": f"job_{uuid.uuid4().hex}", "provider_id": node_world.provider_id,
                "dataset_id": node_world.dataset_id, "purpose": PURPOSE, "tier": 3,
                "query": {"aggregates": MEAN}, "epsilon": 0.25, "delta": 0.0}  # fmt: skip
    take(node_world.node, node_world.config.node_id, node_world.config.enterprise_id, document)
    with node_world.node.db.read() as session:
        row = session.get(NodeJob, document["id"])
        assert row is not None and row.outcome is not None
        assert "suspended" in row.outcome["document"]["reason"]
