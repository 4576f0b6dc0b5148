"""Supply-chain analyses between two enterprises: a control plane, an OEM's node, a
supplier's node and a third enterprise's node, each a real Veil core with its own OpenBao
and database; PSI, the sealed rows and the DP computation go over HTTP through the control
plane.

What must hold: a run releases only the template's DP aggregates, computed in the compute
node's sandbox over the join; both enterprises approve the exact template, each ledger is
debited and each audit chain records it; the control plane never reads a key, a row or the
intersection's size; the other side learns the intersection and nothing of the OEM's other
keys; neither node keeps the other's rows; the stricter minimum applies; a relay that swaps
a message is refused."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import select

from analytics.pair_spec import parse_analysis, reduce_side
from node.link.rounds import NodeLink
from node.setup.provision import init_node, node_settings, running_node
from node.work import collab, pairs
from node.work.models import NodeCollaboration, NodeCollaborationRun
from policies import audit
from policies.budget import Budget
from policies.errors import InvalidRequest
from policies.principals import Principal, Status
from sandbox.client import ApiError, VeilClient
from sandbox.config.settings import Settings
from sandbox.demo.supply import (
    OEM_MAPPING,
    OEM_PLAN,
    SUPPLIER_MAPPING,
    SUPPLIER_STOCK,
    oem_plan,
    part,
    supplier_stock,
    template,
)
from sandbox.oversight.keyaudit import key_audit
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.collab_models import CollaborationRun, RunMessage

pytestmark = pytest.mark.slow  # make test-slow: a module of ~20 s or more (test durations)

LOCAL: dict[str, Any] = {"vault_addr": None, "database_url": None, "job_poll_interval_s": 0.05}
PARTS, OVERLAP = 120, 60  # the OEM's parts 0..119, the supplier's 60..179
SEALED_OVERHEAD = 32 + 12 + 16  # keys.sealed: the ephemeral key, the nonce, the tag


@dataclass
class Party:
    veil: Veil
    link: NodeLink
    node_id: str
    enterprise_id: str
    dataset_id: str
    home: Path


@dataclass
class World:
    cp: Veil
    operator: VeilClient
    provider: VeilClient
    parties: dict[str, Party] = field(default_factory=dict)

    def rounds(self, collaboration_id: str, run_id: str, limit: int = 30) -> dict[str, Any]:
        for _ in range(limit):
            for party in self.parties.values():
                party.link.run_round()
            run = self.provider.get_collaboration_run(collaboration_id, run_id)
            if run["status"] != "running":
                for party in self.parties.values():  # each takes the release on its round
                    party.link.run_round()
                return run
        raise AssertionError("the run did not end")

    def approve(self, name: str, collaboration_id: str, *, epsilon: float = 10.0,
                min_rows: int | None = None) -> NodeCollaboration:  # fmt: skip
        party = self.parties[name]
        mapping = OEM_MAPPING if name == "oem" else SUPPLIER_MAPPING
        return collab.join(party.veil, party.link.control, party.node_id, party.enterprise_id,
                           collaboration_id, party.dataset_id, mapping, "-",
                           Budget.from_floats(epsilon, 1e-3), min_rows=min_rows)  # fmt: skip

    def propose(self, **changes: Any) -> str:
        spec = {**template(self.parties["oem"].enterprise_id,
                           self.parties["supplier"].enterprise_id), **changes}  # fmt: skip
        made = self.provider.propose_collaboration("Inventory cover", "supply chain",
                                                   analysis=spec)  # fmt: skip
        return str(made["id"])


def build_pair_world(stack: contextlib.ExitStack, home: Path, settings: Settings) -> World:
    """A control plane on ``settings``; the OEM's, the supplier's and a third enterprise's
    nodes, enrolled, each with its dataset."""
    cp = stack.enter_context(open_veil(settings))
    url = stack.enter_context(ApiThread(settings, cp))
    token = bootstrap_operator(cp)
    assert token is not None
    operator = stack.enter_context(VeilClient(url, token))
    made = operator.create_provider("Supply Analytics")
    provider = stack.enter_context(VeilClient(url, operator.issue_token(made["id"])))
    world = World(cp, operator, provider)
    data = {"oem": (OEM_PLAN, oem_plan(PARTS)),
            "supplier": (SUPPLIER_STOCK, supplier_stock(PARTS, OVERLAP)),
            "outsider": (SUPPLIER_STOCK, supplier_stock(PARTS, OVERLAP, seed=9))}  # fmt: skip
    for name, (declaration, csv) in data.items():
        enterprise = operator.create_node_enterprise(name, f"{name}-{uuid.uuid4().hex[:6]}")
        node_dir = home / name
        node_set = node_settings(node_dir, **LOCAL)
        config, node_token = init_node(node_dir, url, enterprise["enrolment_code"], node_set)
        veil, link = stack.enter_context(running_node(node_dir, node_set, link=False))
        with ApiThread(node_set, veil) as node_url, VeilClient(node_url, node_token) as owner:
            ds = owner.create_dataset(declaration["name"], declaration["columns"])
            owner.upload(ds["id"], csv)
        world.parties[name] = Party(veil, link, config.node_id, config.enterprise_id,
                                    ds["id"], node_dir)  # fmt: skip
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("pairs")
    with contextlib.ExitStack() as stack:
        yield build_pair_world(stack, home, Settings(data_dir=home / "cp", **LOCAL))


def _truth() -> dict[str, tuple[int, float, float]]:
    """Per family: parts in common, planned demand, stock on hand (the un-noised answer)."""
    plan = (
        pl.read_csv(oem_plan(PARTS)).group_by("part_no", "family").agg(pl.col("planned_qty").sum())
    )
    stock = pl.read_csv(supplier_stock(PARTS, OVERLAP))
    table = (
        plan.join(stock, on="part_no")
        .group_by("family")
        .agg(pl.len(), pl.col("planned_qty").sum(), pl.col("on_hand").sum())
    )
    return {r[0]: (r[1], r[2], r[3]) for r in table.iter_rows()}


def _files_contain(home: Path, needle: bytes) -> list[str]:
    found = []
    for path in home.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            found.append(str(path))
    return found


def test_an_analysis_releases_noised_aggregates_and_each_side_keeps_its_part(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    collaboration = world.propose()
    with pytest.raises(ApiError) as refused:  # nobody approved yet
        world.provider.start_collaboration_run(collaboration)
    assert refused.value.status == 409 and refused.value.code == "too_few_participants"
    world.approve("oem", collaboration)
    with pytest.raises(ApiError) as refused:  # one side only
        world.provider.start_collaboration_run(collaboration)
    assert refused.value.code == "too_few_participants"
    world.approve("supplier", collaboration)

    opened: list[bytes] = []  # what the supplier's node reads of the intersection
    original = pairs.open_sealed

    def spy(private: Any, box: bytes, context: bytes) -> bytes:
        plain = original(private, box, context)
        if context.endswith(b"|intersect"):
            opened.append(plain)
        return plain

    monkeypatch.setattr(pairs, "open_sealed", spy)
    run = world.provider.start_collaboration_run(collaboration)
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "released", done

    truth = _truth()
    rows = {row["group"]["family"]: row["values"] for row in done["release"]["rows"]}
    assert set(rows) == set(truth)
    exact = 0
    for family, (count, planned, stock) in truth.items():
        values = [v["value"] for v in rows[family]]
        exact += sum(a == b for a, b in zip(values, (count, planned, stock), strict=True))
        assert abs(values[0] - count) < 40  # noised at ε 1/3 per statistic, not invented
    assert exact < 12  # really noised (all twelve exact has probability far below 1e-6)
    assert done["release"]["signed_by"] == world.parties["oem"].node_id

    # The supplier learnt exactly the intersection: none of the OEM's other part numbers.
    (plain,) = opened
    told = set(json.loads(plain))
    assert told == {part(i) for i in range(PARTS - OVERLAP, PARTS)}

    # The control plane relayed no key, no row, and kept nothing sealed once it ended.
    with world.cp.db.read() as session:
        bodies = json.dumps([m.body for m in session.scalars(
            select(RunMessage).where(RunMessage.run_id == run["id"])
        )])  # fmt: skip
        phases = set(session.scalars(
            select(RunMessage.phase).where(RunMessage.run_id == run["id"])
        ))  # fmt: skip
    assert "P-0" not in bodies
    assert not phases & {"intersect", "rows"}

    # Neither node wrote down a key of the other that it does not hold itself (the OEM's
    # own keys are 0..119, the supplier's 60..179); the databases, logs and key servers'
    # storage are searched byte for byte.
    assert _files_contain(world.parties["oem"].home, part(170).encode()) == []
    assert _files_contain(world.parties["supplier"].home, part(10).encode()) == []

    # Each side debited its ledger once, keeps the release, and its chain records it.
    for name in ("oem", "supplier"):
        party = world.parties[name]
        with party.veil.db.read() as session:
            ledger = session.get(NodeCollaboration, collaboration)
            receipt = session.get(NodeCollaborationRun, run["id"])
            assert ledger is not None and receipt is not None
            assert (
                ledger.epsilon_spent == receipt.epsilon == Budget.from_floats(1.0, 0).epsilon_units
            )
            assert receipt.state == "released" and receipt.release is not None
            events = session.scalars(
                select(audit.AuditEvent).where(
                    audit.AuditEvent.action == "collaboration.contributed"
                )
            ).all()
        assert any(e.details.get("side") == ("compute" if name == "oem" else "other")
                   for e in events)  # fmt: skip


def test_only_the_named_enterprises_approve_and_each_must_still_be_in(world: World) -> None:
    collaboration = world.propose(min_rows=10)
    outsider = world.parties["outsider"]
    with pytest.raises(InvalidRequest, match="does not name this enterprise"):
        collab.join(outsider.veil, outsider.link.control, outsider.node_id,
                    outsider.enterprise_id, collaboration, outsider.dataset_id,
                    SUPPLIER_MAPPING, "-", Budget.from_floats(10, 1e-3))  # fmt: skip
    world.approve("oem", collaboration)
    world.approve("supplier", collaboration)
    supplier = world.parties["supplier"]
    collab.leave(supplier.veil, supplier.link.control, supplier.node_id,
                 supplier.enterprise_id, collaboration)  # fmt: skip
    with pytest.raises(ApiError) as refused:
        world.provider.start_collaboration_run(collaboration)
    assert refused.value.code == "too_few_participants"
    world.approve("supplier", collaboration)
    _set_status(world.cp, supplier.enterprise_id, Status.SUSPENDED)
    try:
        with pytest.raises(ApiError) as refused:
            world.provider.start_collaboration_run(collaboration)
        assert refused.value.code == "too_few_participants"
    finally:
        _set_status(world.cp, supplier.enterprise_id, Status.ACTIVE)


def _set_status(cp: Veil, principal_id: str, status: Status) -> None:
    with cp.db.transaction() as session:
        principal = session.get(Principal, principal_id)
        assert principal is not None
        principal.status = status


def test_the_stricter_minimum_applies_and_no_row_leaves(world: World) -> None:
    """The supplier asks for more joined rows than the intersection has: the OEM stops at the
    intersection, no row is sent or computed.  Each side paid its run's ε when it answered
    PSI (before anything of its own left), with no refund, so a side is drawn into no more
    PSI sessions than its budget allows; the run cannot be asked of it again."""
    collaboration = world.propose()
    world.approve("oem", collaboration)
    world.approve("supplier", collaboration, min_rows=OVERLAP + 1)  # above the intersection
    run = world.provider.start_collaboration_run(collaboration)
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "failed" and done["release"] is None
    assert "nothing is released" in done["reason"]
    for name in ("oem", "supplier"):
        party = world.parties[name]
        with party.veil.db.read() as session:
            ledger = session.get(NodeCollaboration, collaboration)
            receipt = session.get(NodeCollaborationRun, run["id"])
            assert ledger is not None and receipt is not None
            assert (
                ledger.epsilon_spent == receipt.epsilon == Budget.from_floats(1.0, 0).epsilon_units
            )
            assert receipt.release is None
            here = f"collaboration:{run['id']}"
            assert _count(session, "collaboration.rows_sent", here) == 0
            assert _count(session, "collaboration.computed", here) == 0
            session.expunge(ledger)
        # Each node read its rows for the run: its key server's log explains that (veil
        # audit keys), although the run stopped.
        report = key_audit(party.veil, None)
        assert report.ok, report.unexplained
    # Asked again for its first phase of that run, the OEM refuses before reading anything.
    oem = world.parties["oem"]
    with oem.veil.db.read() as session:
        reads = _count(session, "collaboration.read")
        row = session.get(NodeCollaboration, collaboration)
        assert row is not None
        session.expunge(row)
    task = {"phase": "request", "run_id": run["id"], "collaboration_id": collaboration}
    with pytest.raises(pairs.PairRefused, match="already"):
        oem.link.collab_desk.pairs.answer(row, task)
    with oem.veil.db.read() as session:
        assert _count(session, "collaboration.read") == reads


def test_a_relay_that_swaps_the_run_key_is_refused(world: World) -> None:
    """The control plane replaces the OEM's run key with its own: the supplier's node checks
    the OEM's signature and sends nothing."""
    collaboration = world.propose()
    world.approve("oem", collaboration)
    world.approve("supplier", collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    world.parties["oem"].link.run_round()  # the request
    with world.cp.db.transaction() as session:
        message = session.scalar(
            select(RunMessage).where(RunMessage.run_id == run["id"], RunMessage.phase == "request")
        )
        assert message is not None
        body = json.loads(json.dumps(message.body))
        body["document"]["run_key"] = "A" * 43 + "="
        message.body = body
    done = world.rounds(collaboration, run["id"])
    assert done["status"] == "failed" and "declined" in done["reason"]
    with world.parties["supplier"].veil.db.read() as session:
        assert session.get(NodeCollaborationRun, run["id"]) is None
        with world.cp.db.read() as cp_session:
            stored = cp_session.get(CollaborationRun, run["id"])
            assert stored is not None and stored.release is None


def test_a_template_is_checked_when_proposed(world: World) -> None:
    oem, supplier = world.parties["oem"].enterprise_id, world.parties["supplier"].enterprise_id
    bad_sql = {**template(oem, supplier), "sql": "SELECT COUNT(*) FROM plan LEFT JOIN stock "
               "ON plan.part_no = stock.part_no"}  # fmt: skip
    same = template(oem, oem)
    nobody = template(oem, "ent_" + "0" * 32)
    for spec in (bad_sql, same, nobody):
        with pytest.raises(ApiError) as refused:
            world.provider.propose_collaboration("x", "y", analysis=spec)
        assert refused.value.status == 422


def _box_size(cp: Veil, run_id: str, phase: str) -> int:
    with cp.db.read() as session:
        message = session.scalar(
            select(RunMessage).where(RunMessage.run_id == run_id, RunMessage.phase == phase)
        )
        assert message is not None
        return len(base64.b64decode(message.body["document"]["box"]))


def test_the_relay_learns_nothing_of_the_intersection_size(world: World) -> None:
    """The sealed intersection is as long as all of the OEM's keys, the sealed rows as all
    of the supplier's rows: their lengths are the same whatever the intersection."""
    collaboration = world.propose()
    world.approve("oem", collaboration)
    world.approve("supplier", collaboration)
    run = world.provider.start_collaboration_run(collaboration)
    oem, supplier = world.parties["oem"].link, world.parties["supplier"].link
    oem.run_round()  # request
    supplier.run_round()  # answer
    oem.run_round()  # intersect
    everything = json.dumps(sorted(part(i) for i in range(PARTS))).encode()
    assert _box_size(world.cp, run["id"], "intersect") == SEALED_OVERHEAD + len(everything)
    supplier.run_round()  # rows
    parsed = parse_analysis(template(world.parties["oem"].enterprise_id,
                                     world.parties["supplier"].enterprise_id))  # fmt: skip
    stock = pl.read_csv(supplier_stock(PARTS, OVERLAP)).select(
        pl.col("part_no"), pl.col("on_hand").cast(pl.Float64)
    )
    all_rows = pairs._rows_bytes(reduce_side(stock, parsed.other))
    assert _box_size(world.cp, run["id"], "rows") == SEALED_OVERHEAD + len(all_rows)
    assert world.rounds(collaboration, run["id"])["status"] == "released"


def test_a_relay_cannot_ask_a_side_for_another_sides_phase(world: World) -> None:
    """A control plane that asks the OEM (the compute side) for the rows phase, or the
    supplier to compute, gets a refusal before the node reads anything."""
    collaboration = world.propose()
    world.approve("oem", collaboration)
    world.approve("supplier", collaboration)
    for name, phase, role in (("oem", "rows", "other"), ("oem", "answer", "compute"),
                              ("supplier", "request", "other"),
                              ("supplier", "compute", "compute")):  # fmt: skip
        party = world.parties[name]
        with party.veil.db.read() as session:
            row = session.get(NodeCollaboration, collaboration)
            assert row is not None
            session.expunge(row)
            reads = _count(session, "collaboration.read")
        task = {"phase": phase, "run_id": f"crun_{uuid.uuid4().hex}", "role": role,
                "collaboration_id": collaboration, "messages": {}}  # fmt: skip
        with pytest.raises(pairs.PairRefused, match="does not answer"):
            party.link.collab_desk.pairs.answer(row, task)
        with party.veil.db.read() as session:
            assert _count(session, "collaboration.read") == reads


def _count(session: Any, action: str, resource: str | None = None) -> int:
    query = select(audit.AuditEvent).where(audit.AuditEvent.action == action)
    if resource is not None:
        query = query.where(audit.AuditEvent.resource == resource)
    return len(session.scalars(query).all())
