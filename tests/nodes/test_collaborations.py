"""Benchmarks across enterprises: a control plane and six enterprise nodes, each a real Veil
core with its own OpenBao and database; the runs go through secure aggregation over HTTP.

What must hold: a run releases DP statistics only with enough participants and never
shows the control plane one enterprise's partial; a node that left, was suspended or drops
mid-run is not used and does not break the run; each node debits its own ledger and keeps
its receipt and its standing; a forged or replayed step is refused by the nodes."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select

from analytics.collab_stats import encode_partial, enterprise_values, parse_benchmark
from node.link.rounds import NodeLink
from node.protocol.client import ControlPlaneRefused
from node.setup.provision import init_node, node_settings, running_node
from node.work import collab
from node.work.models import NodeCollaboration, NodeCollaborationRun
from policies import audit
from policies.budget import Budget
from policies.db import new_id
from sandbox.client import ApiError, VeilClient
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION, production_log
from sandbox.oversight.keyaudit import key_audit
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.collab_models import CollaborationRun, RunMessage

LOCAL: dict[str, Any] = {"vault_addr": None, "database_url": None, "job_poll_interval_s": 0.05}
NODES = 6
COLUMNS = [{"name": "cycle_time", "type": "float"}, {"name": "defects", "type": "int"}]
MAPPING = {"cycle_time": "cycle_time_s", "defects": "defects"}


def benchmark(minimum: int = 3) -> dict[str, Any]:
    """A count and a mean over few enterprises: ε 10 keeps the count's noise near one
    enterprise (at ε 1 it is about eight: nothing survives suppression with six)."""
    return {
        "statistics": [
            {"kind": "count"},
            {"kind": "mean", "column": "cycle_time", "lower": 10, "upper": 90},
        ],
        "by": None,
        "epsilon": 10.0,
        "delta": 1e-6,
        "min_participants": minimum,
    }


@dataclass
class Member:
    veil: Veil
    link: NodeLink
    node_id: str
    enterprise_id: str
    dataset_id: str
    csv: bytes


@dataclass
class World:
    cp: Veil
    url: str
    operator: VeilClient
    provider: VeilClient
    members: list[Member] = field(default_factory=list)

    def rounds(self, collaboration_id: str, run_id: str, skip: frozenset[int] = frozenset(),
               limit: int = 40) -> dict[str, Any]:  # fmt: skip
        """Link rounds of every node (but ``skip``) until the run ends; the run."""
        for _ in range(limit):
            for i, member in enumerate(self.members):
                if i not in skip:
                    member.link.run_round()
            run = self.provider.get_collaboration_run(collaboration_id, run_id)
            if run["status"] != "running":
                return run
        raise AssertionError("the run did not end")

    def join(self, members: list[Member], collaboration_id: str, epsilon: float = 100.0) -> None:
        for member in members:
            collab.join(member.veil, member.link.control, member.node_id, member.enterprise_id,
                        collaboration_id, member.dataset_id, MAPPING, "machining",
                        Budget.from_floats(epsilon, 1e-3))  # fmt: skip


def build_world(
    stack: contextlib.ExitStack, home: Path, settings: Settings, nodes: int = NODES
) -> World:
    """A control plane on ``settings`` and ``nodes`` enrolled nodes with a dataset each."""
    cp = stack.enter_context(open_veil(settings))
    url = stack.enter_context(ApiThread(settings, cp))
    token = bootstrap_operator(cp)
    assert token is not None
    operator = stack.enter_context(VeilClient(url, token))
    made = operator.create_provider("Benchmarks Inc")
    provider = stack.enter_context(VeilClient(url, operator.issue_token(made["id"])))
    world = World(cp, url, operator, provider)
    for index in range(nodes):
        enterprise = operator.create_node_enterprise(
            f"Works {index}", f"works{index}-{uuid.uuid4().hex[:6]}"
        )
        node_dir = home / f"node-{index}"
        node_set = node_settings(node_dir, **LOCAL)
        config, node_token = init_node(node_dir, url, enterprise["enrolment_code"], node_set)
        veil, link = stack.enter_context(running_node(node_dir, node_set, link=False))
        csv = production_log(400 + 50 * index, seed=100 + index)
        with ApiThread(node_set, veil) as node_url, VeilClient(node_url, node_token) as owner:
            ds = owner.create_dataset(DECLARATION["name"], DECLARATION["columns"])
            owner.upload(ds["id"], csv)
        world.members.append(Member(veil, link, config.node_id, config.enterprise_id,
                                    ds["id"], csv))  # fmt: skip
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("collab")
    with contextlib.ExitStack() as stack:
        yield build_world(stack, home, Settings(data_dir=home / "cp", **LOCAL))


def propose(world: World, minimum: int = 3) -> str:
    made = world.provider.propose_collaboration(
        "Cycle time benchmark", "industry benchmark", COLUMNS, benchmark(minimum)
    )
    return str(made["id"])


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_a_benchmark_over_six_nodes_is_released_noised_and_each_node_keeps_its_part(
    world: World,
) -> None:
    collaboration = propose(world)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "released", done
    assert done["survivors"] == NODES
    (cell,) = done["release"]["cells"]
    assert done["release"]["dominance_checked"] is True
    if cell["suppressed"] is None:  # the noisy count reached the minimum (about 99.6%)
        count, mean = cell["statistics"]
        value, low, high = count["estimate"]
        assert low <= value <= high and value != NODES  # noised: never exactly the count
        if mean["suppressed"] is None:
            value, low, high = mean["estimate"]
            assert low <= value <= high
        else:  # a noisy total small enough that one enterprise's mean dominates it
            assert "dominate" in mean["suppressed"], mean
    else:
        assert "fewer than" in cell["suppressed"]
    # The control plane read only masked vectors: no message carries one node's partial.
    with world.cp.db.read() as session:
        inputs = session.scalars(
            select(RunMessage).where(RunMessage.run_id == run["id"], RunMessage.phase == "input")
        ).all()
        assert len(inputs) == NODES
        vectors = [
            np.frombuffer(base64.b64decode(m.body["vector"]), dtype="<u8").view(np.int64)
            for m in inputs
        ]
    # No stored vector is any node's partial, nor that partial plus noise (the noise is a
    # few units of 2^32 at most; a masked vector differs by a uniform 64-bit mask).
    spec = parse_benchmark(benchmark())
    for member in world.members:
        frame = pl.read_csv(member.csv).select(
            [pl.col(local).alias(common) for common, local in MAPPING.items()]
        )
        partial = encode_partial(spec, enterprise_values(spec, frame), "machining")
        for vector in vectors:
            gap = np.abs((vector - partial).astype(np.float64))
            assert float(gap.max()) > 2**50
    # Each node takes the release on its next round, and keeps it with its receipt.
    for member in world.members:
        member.link.run_round()
    # Each node debited its own ledger once and keeps its receipt (and its standing).
    for member in world.members:
        with member.veil.db.read() as session:
            row = session.get(NodeCollaboration, collaboration)
            receipt = session.get(NodeCollaborationRun, run["id"])
            assert row is not None and receipt is not None
            assert row.epsilon_spent == receipt.epsilon > 0
            assert receipt.state == "released"
            contributed = session.scalars(
                select(audit.AuditEvent).where(
                    audit.AuditEvent.action == "collaboration.contributed"
                )
            ).all()
            assert [e.resource for e in contributed].count(f"collaboration:{run['id']}") == 1
        # The node's key server log explains the dataset key's use by the contribution, and
        # every other key operation (veil audit keys on the node).
        report = key_audit(member.veil, None)
        assert report.ok, report.unexplained


def test_a_node_reads_every_run_id_the_control_plane_makes() -> None:
    """The node skips a task whose run id it cannot read; the ids the control plane makes
    (a prefix and 32 hex digits) must pass, or no node ever takes part in a run."""
    for _ in range(20):
        assert collab._ID.fullmatch(new_id("crun"))
    for bad in ("crun_" + "a" * 36, "crun_../x", "CRUN_ab", "crun_a b", "_abc", ""):
        assert not collab._ID.fullmatch(bad), bad


def test_too_few_participants_nothing_runs(world: World) -> None:
    collaboration = propose(world, minimum=5)
    world.join(world.members[:4], collaboration)  # four join: one short
    with pytest.raises(ApiError) as refused:
        world.provider.start_collaboration_run(collaboration)
    assert refused.value.status == 409 and refused.value.code == "too_few_participants"


def test_a_node_that_left_is_not_asked_and_the_others_go_on(world: World) -> None:
    collaboration = propose(world)
    world.join(world.members, collaboration)
    gone = world.members[0]
    collab.leave(gone.veil, gone.link.control, gone.node_id, gone.enterprise_id, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "released" and done["nodes"] == NODES - 1
    with gone.veil.db.read() as session:
        assert session.get(NodeCollaborationRun, run["id"]) is None


def test_a_node_restarting_mid_run_drops_out_and_the_others_are_released(world: World) -> None:
    """Node 5 answers the first phases, then loses its keys (a restart): it declines the
    rest, and the run goes on with the five others (its shares unmask nothing of it)."""
    collaboration = propose(world)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    for _ in range(2):  # advertise, then share
        for member in world.members:
            member.link.run_round()
    world.members[5].link.collab_desk._rounds.clear()
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "released", done
    assert done["survivors"] == NODES - 1
    with world.members[5].veil.db.read() as session:
        assert session.get(NodeCollaborationRun, run["id"]) is None  # no partial, no debit


def test_a_silent_node_is_dropped_at_the_phase_deadline(world: World) -> None:
    """Node 0 never answers: when the phase's deadline passes (moved into the past here,
    rather than waited for), the phase closes with the five that answered."""
    collaboration = propose(world)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    for member in world.members[1:]:
        member.link.run_round()  # five adverts; node 0 never answers
    with world.cp.db.transaction() as session:
        row = session.get(CollaborationRun, run["id"])
        assert row is not None and row.phase == "advertise"
        row.phase_deadline = world.cp.clock() - timedelta(seconds=1)
    done = world.rounds(collaboration, run["id"], skip=frozenset({0}))
    assert done["status"] == "released", done
    assert done["survivors"] == NODES - 1


def test_a_node_refuses_a_run_over_its_budget(world: World) -> None:
    collaboration = propose(world)
    world.join(world.members, collaboration, epsilon=15.0)  # room for one run of ε 10
    first = world.provider.start_collaboration_run(collaboration)
    assert world.rounds(collaboration, first["id"])["status"] == "released"
    second = world.provider.start_collaboration_run(collaboration)
    done = world.rounds(collaboration, second["id"])
    assert done["status"] == "failed" and "nothing is released" in done["reason"]
    for member in world.members:
        with member.veil.db.read() as session:
            assert session.get(NodeCollaborationRun, second["id"]) is None
            row = session.get(NodeCollaboration, collaboration)
            assert row is not None and row.epsilon_spent <= row.epsilon_cap


def test_a_control_plane_swapping_an_advert_key_is_refused_by_the_nodes(world: World) -> None:
    """The control plane relays adverts: one whose key it swapped for a key of its own (to
    open that node's shares) is not the sender's signature, and every other node refuses
    the run rather than seal its shares to the control plane."""
    collaboration = propose(world)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    for member in world.members:
        member.link.run_round()  # adverts sent
    mine = X25519PrivateKey.generate().public_key().public_bytes_raw()
    with world.cp.db.transaction() as session:
        message = session.scalars(
            select(RunMessage).where(RunMessage.run_id == run["id"],
                                     RunMessage.phase == "advertise")
        ).first()  # fmt: skip
        assert message is not None
        victim = message.sender
        body = json.loads(json.dumps(message.body))
        body["document"]["c_public"] = base64.b64encode(mine).decode()
        message.body = body
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "failed", done  # too few nodes sealed their shares
    for member in world.members:
        if member.node_id == victim:
            continue
        with member.veil.db.read() as session:
            reasons = [
                e.details.get("reason", "")
                for e in session.scalars(
                    select(audit.AuditEvent).where(
                        audit.AuditEvent.action == "collaboration.refused",
                        audit.AuditEvent.resource == f"collaboration-run:{run['id']}",
                    )
                )
            ]
        assert any("not signed by it" in r for r in reasons), reasons


def test_a_malformed_task_is_declined_and_the_link_goes_on(world: World) -> None:
    """A control plane that hands a node a broken sealed share: the node declines that run
    (audited) and its link round ends normally (jobs keep flowing); the others go on."""
    collaboration = propose(world)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    for _ in range(2):  # advertise, share
        for member in world.members:
            member.link.run_round()
    victim = world.members[2]
    with world.cp.db.transaction() as session:
        message = session.scalars(
            select(RunMessage).where(
                RunMessage.run_id == run["id"], RunMessage.phase == "share",
                RunMessage.recipient == victim.node_id,
            )
        ).first()  # fmt: skip
        assert message is not None
        message.body = {k: v for k, v in message.body.items() if k != "nonce"}
    report = victim.link.run_round()  # does not raise
    assert not report.errors
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "released" and done["survivors"] == NODES - 1
    with victim.veil.db.read() as session:
        refused = session.scalars(
            select(audit.AuditEvent).where(audit.AuditEvent.action == "collaboration.refused")
        ).all()
    assert any("could not be used" in e.details.get("reason", "") for e in refused)


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_link_threads_answer_each_phase_when_it_opens(world: World) -> None:
    """The nodes' link threads, as in production: each long-polls the control plane for
    jobs, and a phase opening returns its waiting claim at once (a claim waits 10 s; five
    phases waiting for it took 50 s)."""
    collaboration = propose(world)
    world.join(world.members, collaboration)
    for member in world.members:
        member.link.start()
    try:
        started = time.monotonic()
        run = world.provider.start_collaboration_run(collaboration)
        done = world.provider.wait_for_collaboration_run(collaboration, run["id"], poll=0.05)
        took = time.monotonic() - started
    finally:
        for member in world.members:
            member.link._stop.set()  # all at once: each stops when its claim returns
        for member in world.members:
            member.link.stop()
    assert done["status"] == "released" and done["survivors"] == NODES, done
    # Five phases each waiting out the nodes' 10 s claims take 40-50 s; woken, a few seconds
    # (6.5 s for 20 nodes: docs/performance.md). The bound leaves room for a loaded machine.
    assert took < 30.0, f"the run took {took:.1f} s: a phase waited for the nodes' claims"


def test_a_node_sending_a_malformed_unmask_answer_is_left_out(world: World) -> None:
    """A survivor's unmask shares that are not numbers are left out, and the others open the
    sum (the control plane never fails on them); a wrong-length vector is refused at once."""
    collaboration = propose(world)
    world.join(world.members, collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    for _ in range(3):  # advertise, share, input
        for member in world.members:
            member.link.run_round()
    bad = world.members[0]
    with pytest.raises(ControlPlaneRefused) as short:
        bad.link.control.call("POST", f"/node/v1/collaborations/runs/{run['id']}/input",
                              {"vector": base64.b64encode(b"\0" * 8).decode()})  # fmt: skip
    assert short.value.status in (409, 422)  # its input is in already, or refused
    bad.link.collab_desk._rounds.clear()  # it answers its unmask by hand, badly
    bad.link.control.call("POST", f"/node/v1/collaborations/runs/{run['id']}/unmask",
                          {"seeds": {"x": ["not", "numbers"]}, "keys": {}})  # fmt: skip
    done = world.rounds(collaboration, run["id"])  # node 0, without its keys, declines
    # Its masked input is in the sum, and its veto never comes: released, unchecked cells
    # suppressed.
    assert done["status"] == "released" and done["survivors"] == NODES, done
    assert done["release"]["dominance_checked"] is False
