"""A provider's proposal of a benchmark across enterprises, and the enterprises' opt-ins.

The proposal declares a common schema (the columns each enterprise maps its own to) and
the statistics wanted (``analytics.collab_stats``); it is pinned by the SHA-256 of its
canonical JSON, which each opt-in names, so a proposal never changes under those who
joined it.  An enterprise joins or leaves from its node only (a document the node's key
server signs); leaving stops every future run from using its data.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func, select

from analytics.collab_stats import BenchmarkSpec, parse_benchmark
from analytics.column_names import is_column_name
from analytics.dp_catalog import QueryError
from analytics.pair_spec import AnalysisSpec, parse_analysis
from i18n import Msg
from keys.node_auth import canonical_json
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import Principal, Role, Status
from sandbox.nodes.mirror import verify_node_document
from sandbox.runtime.veil import Veil
from sandbox.store.collab_models import (
    Collaboration,
    CollaborationMember,
    CollaborationStatus,
    MemberStatus,
)
from sandbox.store.node_models import Node

COLUMN_TYPES = frozenset({"int", "float"})
MAX_COLUMNS = 32


def spec_sha256(spec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec)).hexdigest()


BENCHMARK, ANALYSIS = "benchmark", "analysis"


def kind_of(spec: dict[str, Any]) -> str:
    """A benchmark across many enterprises, or a supply-chain analysis between two."""
    return ANALYSIS if spec.get("kind") == ANALYSIS else BENCHMARK


def benchmark_of(spec: dict[str, Any]) -> BenchmarkSpec:
    """The parsed statistics of a stored spec (it was checked when proposed)."""
    return parse_benchmark(spec["benchmark"])


def analysis_of(spec: dict[str, Any]) -> AnalysisSpec:
    """The parsed template of a stored analysis (it was checked when proposed)."""
    return parse_analysis(spec["analysis"])


def _columns(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_COLUMNS:
        raise InvalidRequest(
            Msg("'columns' must list 1 to {n} columns of the common schema", n=MAX_COLUMNS)
        )
    columns: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"name", "type"}:
            raise InvalidRequest(Msg('columns[{i}] must be {{"name": ..., "type": ...}}', i=i))
        if not isinstance(item["name"], str) or not is_column_name(item["name"]):
            raise InvalidRequest(Msg("columns[{i}].name is not a column name", i=i))
        if item["type"] not in COLUMN_TYPES:
            raise InvalidRequest(Msg("columns[{i}].type must be int or float", i=i))
        columns.append({"name": item["name"], "type": item["type"]})
    if len({c["name"] for c in columns}) != len(columns):
        raise InvalidRequest(Msg("a column of the common schema is declared twice"))
    return columns


def propose(
    veil: Veil,
    provider: Principal,
    title: str,
    purpose: str,
    columns: Any = None,
    benchmark: Any = None,
    analysis: Any = None,
) -> Collaboration:
    """A new open collaboration: a benchmark (``columns`` and ``benchmark``, whose statistics
    name only the common schema's columns) or a supply-chain analysis between two named
    enterprises (``analysis``, the template: ``analytics.pair_spec``)."""
    require(provider, Capability.PROPOSE_COLLABORATIONS)
    if (analysis is None) == (benchmark is None):
        raise InvalidRequest(
            Msg("propose either a benchmark ('columns' and 'benchmark') or an 'analysis'")
        )
    if analysis is not None:
        spec, minimum = _analysis(veil, analysis)
    else:
        spec, minimum = _benchmark(columns, benchmark)
    with veil.db.transaction() as session:
        collaboration = Collaboration(
            id=new_id("col"),
            proposer_id=provider.id,
            title=title,
            purpose=purpose,
            spec=spec,
            spec_sha256=spec_sha256(spec),
            min_participants=minimum,
            status=CollaborationStatus.OPEN,
            created_at=veil.clock(),
        )
        session.add(collaboration)
        audit.record(session, "collaboration.proposed", actor=provider,
                     resource=collaboration.id,
                     details={"sha256": collaboration.spec_sha256,
                              "kind": kind_of(spec)})  # fmt: skip
    return collaboration


def _benchmark(columns: Any, benchmark: Any) -> tuple[dict[str, Any], int]:
    declared = _columns(columns)
    try:
        parsed = parse_benchmark(benchmark)
    except QueryError as exc:
        raise InvalidRequest(
            exc.args[0] if exc.args else Msg("the statistics are invalid")
        ) from None
    names = {c["name"] for c in declared}
    for statistic in parsed.statistics:
        if statistic.column is not None and statistic.column not in names:
            raise InvalidRequest(
                Msg("statistic column {column} is not in the common schema",
                    column=statistic.column)
            )  # fmt: skip
    return {"columns": declared, "benchmark": benchmark}, parsed.min_participants


def _analysis(veil: Veil, template: Any) -> tuple[dict[str, Any], int]:
    """The stored spec of a checked template naming two active enterprises."""
    try:
        parsed = parse_analysis(template)
    except QueryError as exc:
        raise InvalidRequest(exc.args[0] if exc.args else Msg("the template is invalid")) from None
    with veil.db.read() as session:
        for side in (parsed.compute, parsed.other):
            enterprise = session.get(Principal, side.enterprise)
            if enterprise is None or enterprise.role != Role.ENTERPRISE:
                raise InvalidRequest(
                    Msg("sides.{role}.enterprise names no enterprise", role=side.role)
                )
    return {"kind": ANALYSIS, "analysis": template}, 2


def members_joined(session: Any, collaboration_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                CollaborationMember.collaboration_id == collaboration_id,
                CollaborationMember.status == MemberStatus.JOINED,
            )
        )
        or 0
    )


def summary(collaboration: Collaboration, joined: int) -> dict[str, Any]:
    """What the proposer and operators see: never which enterprises joined, only how many."""
    return {
        "id": collaboration.id,
        "kind": kind_of(collaboration.spec),
        "title": collaboration.title,
        "purpose": collaboration.purpose,
        "status": collaboration.status,
        "spec": collaboration.spec,
        "spec_sha256": collaboration.spec_sha256,
        "min_participants": collaboration.min_participants,
        "participants": joined,
        "created_at": collaboration.created_at.isoformat(),
    }


def visible(veil: Veil, caller: Principal, collaboration_id: str) -> Collaboration:
    """The collaboration if ``caller`` may read it (404 otherwise, as for any object)."""
    require(caller, Capability.READ_COLLABORATIONS)
    with veil.db.read() as session:
        collaboration = session.get(Collaboration, collaboration_id)
        if collaboration is None or (
            caller.role == Role.PROVIDER and collaboration.proposer_id != caller.id
        ):
            raise NotFound("collaboration", collaboration_id)
        session.expunge(collaboration)
        return collaboration


def list_for(veil: Veil, caller: Principal) -> list[dict[str, Any]]:
    require(caller, Capability.READ_COLLABORATIONS)
    with veil.db.read() as session:
        query = select(Collaboration).order_by(Collaboration.created_at)
        if caller.role == Role.PROVIDER:
            query = query.where(Collaboration.proposer_id == caller.id)
        return [summary(c, members_joined(session, c.id)) for c in session.scalars(query)]


def close(veil: Veil, caller: Principal, collaboration_id: str) -> None:
    collaboration = visible(veil, caller, collaboration_id)
    require(caller, Capability.PROPOSE_COLLABORATIONS)
    with veil.db.transaction() as session:
        row = session.get(Collaboration, collaboration.id)
        assert row is not None
        row.status = CollaborationStatus.CLOSED
        audit.record(session, "collaboration.closed", actor=caller, resource=row.id)


def open_for_nodes(veil: Veil) -> list[dict[str, Any]]:
    """The open proposals a node's enterprise may join (and their proposer's name)."""
    with veil.db.read() as session:
        rows = session.execute(
            select(Collaboration, Principal.name)
            .join(Principal, Principal.id == Collaboration.proposer_id)
            .where(Collaboration.status == CollaborationStatus.OPEN)
            .order_by(Collaboration.created_at)
        )
        return [
            {"id": c.id, "kind": kind_of(c.spec), "title": c.title, "purpose": c.purpose,
             "proposer": name,
             "spec": c.spec, "spec_sha256": c.spec_sha256,
             "min_participants": c.min_participants}
            for c, name in rows
        ]  # fmt: skip


def set_membership(veil: Veil, node: Node, collaboration_id: str, signed: dict[str, Any]) -> str:
    """Record a node's signed opt-in (``joined: true``) or opt-out; the new status."""
    document = verify_node_document(node, signed)
    if document.get("kind") != "collaboration-membership":
        raise InvalidRequest(Msg("the document is not a collaboration membership"))
    if document.get("collaboration_id") != collaboration_id:
        raise InvalidRequest(Msg("the document names another collaboration"))
    joined = document.get("joined") is True
    category = document.get("category")
    if joined and (not isinstance(category, str) or not 1 <= len(category) <= 100):
        raise InvalidRequest(Msg("an opt-in names the enterprise's category (1-100 characters)"))
    with veil.db.transaction() as session:
        collaboration = session.get(Collaboration, collaboration_id)
        if collaboration is None:
            raise NotFound("collaboration", collaboration_id)
        if joined and collaboration.status != CollaborationStatus.OPEN:
            raise Conflict(Msg("the collaboration is closed"), code="collaboration_closed")
        if joined and document.get("spec_sha256") != collaboration.spec_sha256:
            raise Conflict(Msg("the opt-in names another version of the proposal"),
                           code="spec_mismatch")  # fmt: skip
        if joined and kind_of(collaboration.spec) == ANALYSIS:
            side = analysis_of(collaboration.spec).side_of(node.enterprise_id)
            if side is None or side.role != category:
                raise Conflict(Msg("the analysis does not name this enterprise on that side"),
                               code="not_a_party")  # fmt: skip
        member = session.get(CollaborationMember, (collaboration_id, node.enterprise_id))
        status = MemberStatus.JOINED if joined else MemberStatus.LEFT
        if member is None:
            if not joined:
                return str(MemberStatus.LEFT)
            member = CollaborationMember(
                collaboration_id=collaboration_id, enterprise_id=node.enterprise_id,
                node_id=node.id, category=str(category), opt_in=signed, status=status,
                joined_at=veil.clock(),
            )  # fmt: skip
            session.add(member)
        else:
            member.status, member.opt_in = status, signed
            if joined:
                member.category, member.left_at = str(category), None
            else:
                member.left_at = veil.clock()
        audit.record(session, f"collaboration.{'joined' if joined else 'left'}",
                     tenant_id=node.enterprise_id, resource=collaboration_id)  # fmt: skip
    return str(status)


def active_members(session: Any, collaboration_id: str) -> list[CollaborationMember]:
    """Members who joined, whose node is enrolled and whose enterprise is not suspended."""
    rows = session.scalars(
        select(CollaborationMember)
        .join(Node, Node.id == CollaborationMember.node_id)
        .join(Principal, Principal.id == CollaborationMember.enterprise_id)
        .where(
            CollaborationMember.collaboration_id == collaboration_id,
            CollaborationMember.status == MemberStatus.JOINED,
            Node.status == "active",
            Principal.status == Status.ACTIVE,
        )
        .order_by(CollaborationMember.node_id)
    )
    return list(rows)
