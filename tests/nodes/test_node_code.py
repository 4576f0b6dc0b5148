"""Tier 5 through an enterprise node: the provider submits to the control plane as before;
the node checks the code against its own grants, runs it on the mock, and its enterprise
reviews it there.  The node runs only code its own copy approved, and a held output waits on
the node for the enterprise.  Real PySyft in real bubblewrap sandboxes on both sides."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from analytics.syft_code import source_sha256
from node.protocol.signing import sign
from node.work.models import NodeJob
from policies.grants import Grant
from sandbox.cli import run
from sandbox.client import ApiError, VeilClient
from sandbox.demo.data import MACHINES
from sandbox.nodes import code as cp_code
from sandbox.store.models import CodeRequest, CodeStatus
from sandbox.store.node_models import Node
from tests.nodes.conftest import GRANTED, PURPOSE, NodeWorld
from tests.sandbox.test_reviewed_code import MAX_CYCLE, MEAN_CYCLE, RAW_ROWS

pytestmark = pytest.mark.integration


def grant_tier_5(world: NodeWorld) -> None:
    world.enterprise.create_grant(
        world.provider_id, [world.dataset_id], GRANTED, [5], [PURPOSE],
        datetime.now(UTC) + timedelta(days=1), 1.0,
    )  # fmt: skip
    world.sync()


def rounds_until(world: NodeWorld, done: object, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the node did not get there in time"
        world.link.run_round()
        time.sleep(0.1)


def on_control_plane(world: NodeWorld) -> VeilClient:
    """The enterprise's own token on the control plane."""
    return VeilClient(world.cp_url, world.operator.issue_token(world.config.enterprise_id))


@pytest.mark.slow  # PySyft on a node, ~35 s (make test-slow)
def test_code_is_reviewed_on_the_node_and_runs_there(node_world: NodeWorld) -> None:
    world = node_world
    grant_tier_5(world)
    submitted = world.provider.submit_code(world.dataset_id, PURPOSE, MEAN_CYCLE)
    assert submitted["status"] == "pending"
    # Reviewing is the enterprise's, on its node: the control plane refuses it.
    with pytest.raises(ApiError) as refused:
        on_control_plane(world).approve_code(submitted["id"], "from the control plane")
    assert refused.value.status == 409 and refused.value.code == "data_on_node"
    world.sync()
    # The node checked it against its own grant and ran it on the mock itself.
    review = world.enterprise.get_code(submitted["id"])
    assert review["source"] == MEAN_CYCLE and review["sha256"] == submitted["sha256"]
    assert review["columns"] == ["cycle_time_s", "machine"] and review["mock_output"]["value"]
    world.enterprise.approve_code(submitted["id"], "aggregates by machine are fine")
    world.sync()
    seen = world.provider.get_code(submitted["id"])
    assert seen["status"] == "approved"
    assert seen["review_reason"] == "aggregates by machine are fine"
    job = world.provider.submit_code_job(world.dataset_id, PURPOSE, submitted["id"], 0.0)
    world.run_jobs(timeout=240)
    final = world.provider.get_job(job["id"])
    assert final["status"] == "released", final
    result = world.provider.get_result(job["id"])
    assert result["checks"]["status"] == "pass" and result["code_sha256"] == submitted["sha256"]
    assert set(result["output"]["index"]) <= set(MACHINES)
    with world.node.db.read() as session:  # decided and run on the node's own records
        local = session.get(CodeRequest, submitted["id"])
        assert local is not None and local.status == CodeStatus.APPROVED
        assert local.reviewer_id == world.config.enterprise_id


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_the_node_runs_only_code_its_enterprise_approved(node_world: NodeWorld) -> None:
    """A compromised control plane marks a request approved, or swaps an approved request's
    source: the node runs its own approved copy, or nothing."""
    world = node_world
    grant_tier_5(world)
    pending = world.provider.submit_code(world.dataset_id, PURPOSE, MEAN_CYCLE)
    world.sync()
    with world.cp.db.transaction() as session:  # the forged approval
        session.execute(
            update(CodeRequest)
            .where(CodeRequest.id == pending["id"])
            .values(status=CodeStatus.APPROVED, review_reason="forged")
        )
    forged = world.provider.submit_code_job(world.dataset_id, PURPOSE, pending["id"], 0.0)
    world.run_jobs(timeout=240)
    failed = world.provider.get_job(forged["id"])
    assert failed["status"] == "failed" and "pending, not approved" in failed["error"]
    with world.node.db.read() as session:
        local = session.get(CodeRequest, pending["id"])
        assert local is not None and local.status == CodeStatus.PENDING
    # A decision the node did not sign is refused.
    with world.cp.db.read() as session:
        node = session.get(Node, world.config.node_id)
        assert node is not None
        session.expunge(node)
    unsigned = {"document": {"kind": "code_decision", "id": pending["id"], "approved": True,
                             "sha256": pending["sha256"], "node_id": node.id},
                "signature": "veil-ed25519:v1:" + "A" * 88}  # fmt: skip
    with pytest.raises(Exception) as bad:
        cp_code.accept_decision(world.cp, node, pending["id"], unsigned)
    assert getattr(bad.value, "code", "") == "bad_signature"
    # The enterprise approves on its node; then the control plane swaps the source for one
    # that returns rows (with a matching hash, so its own checks pass): the node runs its
    # own approved copy.
    with world.cp.db.transaction() as session:
        session.execute(
            update(CodeRequest)
            .where(CodeRequest.id == pending["id"])
            .values(status=CodeStatus.PENDING, review_reason=None)
        )
    # A decision the node signed, but on another source than the control plane's copy:
    # refused, so the provider never sees "approved" for code the node did not review.
    other = {"kind": "code_decision", "id": pending["id"], "approved": True,
             "sha256": "0" * 64, "reason": "x"}  # fmt: skip
    with pytest.raises(Exception) as mismatch:
        cp_code.accept_decision(world.cp, node, pending["id"], sign(world.node, node.id, other))
    assert getattr(mismatch.value, "code", "") == "code_mismatch"
    world.enterprise.approve_code(pending["id"], "aggregates by machine are fine")
    world.sync()
    with world.cp.db.transaction() as session:
        session.execute(
            update(CodeRequest)
            .where(CodeRequest.id == pending["id"])
            .values(source=RAW_ROWS, sha256=source_sha256(RAW_ROWS))
        )
    job = world.provider.submit_code_job(world.dataset_id, PURPOSE, pending["id"], 0.0)
    world.run_jobs(timeout=240)
    result = world.provider.get_result(job["id"])
    assert result["code_sha256"] == pending["sha256"] != source_sha256(RAW_ROWS)
    assert set(result["output"]["index"]) <= set(MACHINES)


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_code_needs_a_tier_5_grant_made_on_the_node(node_world: NodeWorld) -> None:
    """The control plane widens its copy of the grant to tier 5: the provider may submit
    there, but the node refuses the request (signed), and the provider sees why."""
    world = node_world
    with world.cp.db.transaction() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None
        grant.tiers = [*grant.tiers, 5]
    submitted = world.provider.submit_code(world.dataset_id, PURPOSE, MEAN_CYCLE)
    world.sync()
    seen = world.provider.get_code(submitted["id"])
    assert seen["status"] == "denied"
    assert seen["review_reason"].startswith("refused by the enterprise's node: tier 5")
    with world.node.db.read() as session:
        local = session.get(CodeRequest, submitted["id"])
        assert local is not None and local.status == CodeStatus.DENIED
    with pytest.raises(ApiError):
        world.provider.submit_code_job(world.dataset_id, PURPOSE, submitted["id"], 0.0)


@pytest.mark.slow  # PySyft on a node, ~35 s (make test-slow)
def test_a_held_output_waits_on_the_node_for_the_enterprise(
    node_world: NodeWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    world = node_world
    grant_tier_5(world)
    submitted = world.provider.submit_code(world.dataset_id, PURPOSE, MAX_CYCLE)
    world.sync()
    world.enterprise.approve_code(submitted["id"], "one number, reviewed")
    world.sync()
    job = world.provider.submit_code_job(world.dataset_id, PURPOSE, submitted["id"], 0.0)
    rounds_until(world, lambda: world.provider.get_job(job["id"])["status"] == "held")
    assert not world.link.run_round().errors
    # The held output is on the node only: the control plane cannot show or decide it.
    with pytest.raises(ApiError) as refused:
        on_control_plane(world).release_held(job["id"], "from the control plane")
    assert refused.value.code == "data_on_node"
    with world.node.db.read() as session:  # the node's own job for the control plane's
        local = session.get(NodeJob, job["id"])
        assert local is not None and local.local_job_id is not None
        local_id = local.local_job_id
    assert run(["node", "status", "--dir", str(world.node_dir), "--json"], False) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["held_outputs"] == f"{local_id} ({job['id']})"
    held = world.enterprise.held_output(local_id)
    assert held["checks"]["status"] == "held" and held["code_sha256"] == submitted["sha256"]
    world.enterprise.release_held(local_id, "the longest cycle is not sensitive")
    world.run_jobs(timeout=60)
    final = world.provider.get_job(job["id"])
    assert final["status"] == "released", final
    result = world.provider.get_result(job["id"])
    assert result["checks"]["released_by_hand"] == "the longest cycle is not sensitive"
