"""Collaborations on the node: the enterprise's opt-ins, and its part in each run.

The enterprise joins a proposal here (``join``: which dataset, how its columns map to the
common schema, its public category, and a budget of its own for this collaboration), and
leaves it here (``leave``); each is a document the node's key server signs.  In a run
(``CollabDesk``), the node decides again before each phase: the proposal is still the one
it joined (by its SHA-256, computed here), it has not left, the run's cost fits what is
left of its budget, and it never contributes twice to one run.  Its partial is computed
here, from its own data, noised here with OpenDP, and masked before it leaves
(``keys.secure_sum``): the control plane relays and sums, and reads no partial.  The
release and where the enterprise stands in it stay here too (``receipts``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from analytics.collab_stats import (
    BenchmarkSpec,
    dominance_veto,
    encode_partial,
    enterprise_values,
    noise_share,
    parse_benchmark,
    privacy_cost,
    release_from_json,
    where_it_stands,
)
from analytics.dp_catalog import QueryError
from analytics.pair_spec import parse_analysis
from i18n import Msg
from keys.node_auth import TASKS_AT_HEADER, canonical_json
from keys.secure_sum import Advert, Party, SealedShares, SecureSumError
from node.protocol.client import ControlPlane, ControlPlaneRefused, ControlPlaneUnavailable
from node.protocol.signing import peer_document, sign
from node.work.models import NodeCollaboration, NodeCollaborationRun
from node.work.pairs import PairDesk, PairRefused
from policies import audit
from policies.budget import Budget
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import Principal
from sandbox.data.datasets import latest_version, load_frame
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset

log = logging.getLogger(__name__)

JOINED, LEFT = "joined", "left"
PHASES = frozenset({"advertise", "share", "input", "unmask", "veto", "released",
                    "request", "answer", "intersect", "rows", "compute"})  # fmt: skip
#: The control plane's ids (``policies.db.new_id``: a prefix, ``_``, 32 hex digits), at most
#: 40 characters as its columns are.
_ID = re.compile(r"^(?=.{3,40}$)[a-z]{1,8}_[A-Za-z0-9_-]+$")


def spec_sha256(spec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec)).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def proposals(control: ControlPlane) -> list[dict[str, Any]]:
    """The open proposals on the control plane (to choose from; nothing is joined yet)."""
    return list(control.call("GET", "/node/v1/collaborations") or [])


def _membership(veil: Veil, node_id: str, row: NodeCollaboration, joined: bool) -> dict[str, Any]:
    document = {
        "kind": "collaboration-membership",
        "id": row.collaboration_id,
        "collaboration_id": row.collaboration_id,
        "spec_sha256": row.spec_sha256,
        "category": row.category,
        "joined": joined,
    }
    return sign(veil, node_id, document)


def join(
    veil: Veil,
    control: ControlPlane,
    node_id: str,
    enterprise_id: str,
    collaboration_id: str,
    dataset_id: str,
    mapping: dict[str, str],
    category: str,
    budget: Budget,
    *,
    min_rows: int | None = None,
) -> NodeCollaboration:
    """Join a proposal with one of this enterprise's datasets; checked here, signed here.

    For a supply-chain analysis (``node.work.pairs``) this is the approval of its exact
    template: the enterprise must be named on one side (its side is the category), map that
    side's key and columns, and may ask for more joined rows (``min_rows``) than the
    template's minimum: the stricter side's minimum applies."""
    found = [p for p in proposals(control) if p.get("id") == collaboration_id]
    if not found:
        raise NotFound("collaboration", collaboration_id)
    spec = dict(found[0]["spec"])
    with veil.db.read() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.enterprise_id != enterprise_id:
            raise NotFound("dataset", dataset_id)
        declared = {c["name"]: c for c in dataset.declaration.get("columns", [])}
    rules: dict[str, Any] | None = None
    if spec.get("kind") == "analysis":
        category, wanted, rules = _approval(spec, enterprise_id, min_rows)
    else:
        parsed = parse_benchmark(spec["benchmark"])
        common = {str(c["name"]): str(c["type"]) for c in spec["columns"]}
        wanted = {s.column: "numeric" for s in parsed.statistics if s.column is not None}
        unknown = set(mapping) - set(common)
        if unknown:
            raise InvalidRequest(Msg("{column} is not a column of the common schema",
                                     column=sorted(unknown)[0]))  # fmt: skip
    _check_mapping(wanted, mapping, declared)
    if not category or len(category) > 100:
        raise InvalidRequest(Msg("give the enterprise's category (1-100 characters)"))
    with veil.db.transaction() as session:
        row = session.get(NodeCollaboration, collaboration_id)
        if row is None:
            row = NodeCollaboration(collaboration_id=collaboration_id, epsilon_spent=0,
                                    delta_spent=0, joined_at=veil.clock())  # fmt: skip
            session.add(row)
        row.spec, row.spec_sha256 = spec, spec_sha256(spec)
        row.dataset_id, row.category = dataset_id, category
        row.mapping = {k: v for k, v in mapping.items() if k in wanted}
        row.rules = rules
        row.epsilon_cap, row.delta_cap = budget.epsilon_units, budget.delta_units
        row.status, row.left_at = JOINED, None
        audit.record(session, "collaboration.joined", tenant_id=enterprise_id,
                     resource=f"collaboration:{collaboration_id}",
                     details={"dataset_id": dataset_id, "sha256": row.spec_sha256,
                              "epsilon_cap": budget.epsilon, "delta_cap": budget.delta,
                              **(rules or {})})  # fmt: skip
        session.flush()
        session.expunge(row)
    control.call("PUT", f"/node/v1/collaborations/{collaboration_id}/membership",
                 _membership(veil, node_id, row, True))  # fmt: skip
    return row


def _approval(
    spec: dict[str, Any], enterprise_id: str, min_rows: int | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """This enterprise's side of an analysis template: its role, the columns it must map
    (the key included) with their kind, and its rules."""
    try:
        template = parse_analysis(spec["analysis"])
    except QueryError as exc:
        raise InvalidRequest(exc.args[0] if exc.args else Msg("the template is invalid")) from None
    side = template.side_of(enterprise_id)
    if side is None:
        raise InvalidRequest(Msg("the analysis does not name this enterprise: it cannot approve"))
    if min_rows is not None and min_rows < template.min_rows:
        raise InvalidRequest(Msg("--min-rows can only be stricter than the template's {n}",
                                 n=template.min_rows))  # fmt: skip
    wanted = {side.key: "key"}
    for column in side.columns:
        wanted[column.name] = "numeric" if column.is_numeric else "string"
    return side.role, wanted, {"min_rows": max(template.min_rows, min_rows or 0)}


def _check_mapping(
    wanted: dict[str, str], mapping: dict[str, str], declared: dict[str, dict[str, Any]]
) -> None:
    """Each wanted column maps to a dataset column of its kind, never a secret one."""
    for column, kind in sorted(wanted.items()):
        local = mapping.get(column)
        if local is None:
            raise InvalidRequest(Msg("map the common column {column} to a column of the "
                                     "dataset (--map {column}=LOCAL)", column=column))  # fmt: skip
        spec_of = declared.get(local) or {}
        if kind == "numeric" and spec_of.get("type") not in ("integer", "float"):
            raise InvalidRequest(Msg("the dataset has no numeric column {column}", column=local))
        if kind != "numeric" and not spec_of:
            raise InvalidRequest(Msg("the dataset has no column {column}", column=local))
        if spec_of.get("class") == "secret":
            raise InvalidRequest(Msg("{column} is secret: nothing of it leaves, not even in a "
                                     "collaboration", column=local))  # fmt: skip


def leave(
    veil: Veil, control: ControlPlane, node_id: str, enterprise_id: str, collaboration_id: str
) -> None:
    """Leave: from now on this node takes part in no run of it, whatever the control plane
    says (it is recorded here first; the control plane is told after)."""
    with veil.db.transaction() as session:
        row = session.get(NodeCollaboration, collaboration_id)
        if row is None:
            raise NotFound("collaboration", collaboration_id)
        row.status, row.left_at = LEFT, veil.clock()
        audit.record(session, "collaboration.left", tenant_id=enterprise_id,
                     resource=f"collaboration:{collaboration_id}")  # fmt: skip
        session.flush()
        session.expunge(row)
    control.call("PUT", f"/node/v1/collaborations/{collaboration_id}/membership",
                 _membership(veil, node_id, row, False))  # fmt: skip


def memberships(veil: Veil) -> list[dict[str, Any]]:
    """The enterprise's opt-ins, each with its budget and what was spent of it."""
    with veil.db.read() as session:
        rows = session.scalars(select(NodeCollaboration).order_by(NodeCollaboration.joined_at))
        return [
            {"collaboration_id": r.collaboration_id, "status": r.status,
             "dataset_id": r.dataset_id, "category": r.category,
             "budget": Budget(r.epsilon_cap, r.delta_cap).describe(),
             "spent": Budget(r.epsilon_spent, r.delta_spent).describe()}
            for r in rows
        ]  # fmt: skip


def receipts(veil: Veil) -> list[dict[str, Any]]:
    """What this enterprise's data contributed to: each run, its cost, its release, and where
    the enterprise stands in it (seen here only)."""
    with veil.db.read() as session:
        rows = session.scalars(
            select(NodeCollaborationRun).order_by(NodeCollaborationRun.created_at)
        )
        return [
            {"run_id": r.run_id, "collaboration_id": r.collaboration_id, "state": r.state,
             "cost": Budget(r.epsilon, r.delta).describe(), "release": r.release,
             "standing": r.standing, "at": r.created_at.isoformat()}
            for r in rows
        ]  # fmt: skip


# ---------------------------------------------------------------- runs


@dataclass
class _Round:
    party: Party
    spec: BenchmarkSpec
    values: dict[str, float | None] | None = None
    category: str = ""


class Refused(Exception):
    """This node does not take part (the reason is audited here; the run goes on without it
    if enough others answer)."""


class CollabDesk:
    """The node's part in collaboration runs, phase by phase (``sync`` each link round)."""

    def __init__(self, veil: Veil, control: ControlPlane, node_id: str, enterprise_id: str) -> None:
        self.veil, self.control = veil, control
        self.node_id, self.enterprise_id = node_id, enterprise_id
        self._rounds: dict[str, _Round] = {}
        self._refused: set[tuple[str, str]] = set()
        self.pairs = PairDesk(veil, node_id, enterprise_id)
        self.read_at = ""  # the control plane's time of the last tasks read (a hint)

    def sync(self) -> int:
        """Answer every phase the control plane asks of this node now; how many."""
        done = 0
        reply = self.control.send("GET", "/node/v1/collaborations/tasks")
        self.read_at = reply.headers.get(TASKS_AT_HEADER, "")  # the next claim's ``since``
        for task in reply.body or []:
            run_id, phase = str(task.get("run_id", "")), str(task.get("phase", ""))
            if not (_ID.fullmatch(run_id) and phase in PHASES):
                log.warning("a collaboration task this node cannot read was skipped")
                continue
            if (run_id, phase) in self._refused:
                continue
            try:
                body = self._answer(task)
            except ControlPlaneUnavailable:
                raise
            except (Refused, PairRefused, SecureSumError, InvalidRequest, Conflict,
                    NotFound) as exc:  # fmt: skip
                self._refuse(run_id, phase, str(exc))
                continue
            except Exception as exc:  # a task this node cannot use: never the link's end
                log.exception("collaboration run %s, phase %s: bad task", run_id, phase)
                self._refuse(run_id, phase, f"the task could not be used ({type(exc).__name__})")
                continue
            try:
                self.control.call("POST", f"/node/v1/collaborations/runs/{run_id}/{phase}", body)
            except ControlPlaneRefused as exc:
                if exc.status >= 500:
                    raise
                self._refuse(run_id, phase, exc.code, tell=False)
                continue
            done += 1
        return done

    def _refuse(self, run_id: str, phase: str, reason: str, *, tell: bool = True) -> None:
        """Take no (further) part in the run: audited here; the control plane is told only
        that this node declines (never why), so the phase need not wait for it."""
        self._refused.add((run_id, phase))
        self._rounds.pop(run_id, None)
        self.pairs.forget(run_id)
        if tell:
            with contextlib.suppress(ControlPlaneRefused):
                self.control.call("POST", f"/node/v1/collaborations/runs/{run_id}/{phase}",
                                  {"declined": True})  # fmt: skip
        log.warning("collaboration run %s, phase %s: not taking part (%s)", run_id, phase, reason)
        with self.veil.db.transaction() as session:
            audit.record(session, "collaboration.refused", tenant_id=self.enterprise_id,
                         resource=f"collaboration-run:{run_id}",
                         details={"phase": phase, "reason": reason[:200]})  # fmt: skip

    def _answer(self, task: dict[str, Any]) -> dict[str, Any]:
        phase, run_id = task["phase"], task["run_id"]
        if "role" in task:  # a supply-chain analysis between two enterprises (node.work.pairs)
            if phase == "released":
                return self.pairs.answer(None, task)
            return self.pairs.answer(self._joined(task), task)
        if phase == "advertise":
            return self._advertise(task)
        if phase == "released":
            return self._released(task)
        held = self._rounds.get(run_id)
        if held is None:
            raise Refused("this node holds no keys for the run (it restarted, or refused)")
        if phase == "share":
            return self._share(held, task)
        if phase == "input":
            return self._input(held, task)
        if phase == "unmask":
            survivors, dropped = list(task["survivors"]), list(task["dropped"])
            reveal = held.party.unmask(survivors, dropped)
            return {"seeds": {k: [str(x), str(y)] for k, (x, y) in reveal.seeds.items()},
                    "keys": {k: [str(x), str(y)] for k, (x, y) in reveal.keys.items()}}  # fmt: skip
        if phase == "veto":
            return self._veto(held, task)
        raise Refused(f"unknown phase {phase}")

    def _joined(self, task: dict[str, Any]) -> NodeCollaboration:
        """The opt-in that covers this run, checked against this node's own records."""
        with self.veil.db.read() as session:
            row = session.get(NodeCollaboration, str(task.get("collaboration_id")))
            if row is None or row.status != JOINED:
                raise Refused("the enterprise has not joined this collaboration")
            if row.spec_sha256 != task.get("spec_sha256"):
                raise Refused("the run names another version of the proposal")
            session.expunge(row)
            return row

    def _advertise(self, task: dict[str, Any]) -> dict[str, Any]:
        row = self._joined(task)
        spec = parse_benchmark(row.spec["benchmark"])
        cost = Budget.from_floats(*privacy_cost(spec))
        left = Budget(row.epsilon_cap, row.delta_cap) - Budget(row.epsilon_spent, row.delta_spent)
        if not cost.fits_within(left):
            raise Refused("the run would exceed the enterprise's budget for this collaboration")
        with self.veil.db.read() as session:
            if session.get(NodeCollaborationRun, task["run_id"]) is not None:
                raise Refused("this node contributed to this run already")
        party = Party(self.node_id, str(task["run_id"]), max(2, int(task["threshold"])))
        self._rounds[task["run_id"]] = _Round(party, spec, category=row.category)
        advert = party.advertise()
        return sign(self.veil, self.node_id, {
            "kind": "collaboration-advert", "id": task["run_id"], "run_id": task["run_id"],
            "c_public": _b64(advert.c_public), "s_public": _b64(advert.s_public),
        })  # fmt: skip

    def _share(self, held: _Round, task: dict[str, Any]) -> dict[str, Any]:
        adverts = [self._verified(item, task["run_id"]) for item in task["adverts"]]
        if len(adverts) < held.spec.min_participants:
            raise Refused("fewer nodes advertised than the collaboration's minimum")
        held.party.threshold = int(task["threshold"])
        if held.party.threshold < held.spec.min_participants:
            raise Refused("the run's threshold is below the collaboration's minimum")
        sealed = held.party.share_keys(adverts)
        return {"sealed": [{"recipient": s.recipient, "nonce": _b64(s.nonce),
                            "ciphertext": _b64(s.ciphertext)} for s in sealed]}  # fmt: skip

    def _verified(self, item: dict[str, Any], run_id: str) -> Advert:
        """Another node's advert, if its key server signed it for this run (the control
        plane relays adverts and must not swap their keys)."""
        node_id = str(item.get("node_id"))
        document = peer_document(str(item.get("signing_key")), item.get("advert"))
        if document is None:
            raise Refused(f"the advert of node {node_id} is not signed by it")
        if document.get("node_id") != node_id or document.get("run_id") != run_id:
            raise Refused(f"the advert of node {node_id} is for another node or run")
        return Advert(node_id, base64.b64decode(document["c_public"]),
                      base64.b64decode(document["s_public"]))  # fmt: skip

    def _input(self, held: _Round, task: dict[str, Any]) -> dict[str, Any]:
        """This enterprise's partial, noised and masked; the budget is debited first."""
        row = self._joined(task)
        run_id = str(task["run_id"])
        if int(task["threshold"]) != held.party.threshold:
            raise Refused("the run's threshold changed")
        started = self.veil.clock()
        with self.veil.db.read() as session:
            version = latest_version(session, row.dataset_id)
            enterprise = session.get(Principal, self.enterprise_id)
            if version is None or enterprise is None or not enterprise.slug:
                raise Refused("the dataset has no version")
            session.expunge(version)
            tenant = enterprise.slug  # the enterprise's tenant in its key server
        frame = load_frame(self.veil, tenant, version)
        renamed = frame.select(
            [frame[local].alias(common) for common, local in row.mapping.items()]
        )
        held.values = enterprise_values(held.spec, renamed)
        partial = encode_partial(held.spec, held.values, row.category)
        vector = (partial + noise_share(held.spec, held.party.threshold)).view(np.uint64)
        cost = Budget.from_floats(*privacy_cost(held.spec))
        with self.veil.db.transaction() as session:
            if session.get(NodeCollaborationRun, run_id) is not None:
                raise Refused("this node contributed to this run already")
            ledger = session.get(NodeCollaboration, row.collaboration_id)
            assert ledger is not None
            spent = Budget(ledger.epsilon_spent, ledger.delta_spent) + cost
            if not spent.fits_within(Budget(ledger.epsilon_cap, ledger.delta_cap)):
                raise Refused("the run would exceed the enterprise's budget")
            ledger.epsilon_spent, ledger.delta_spent = spent.epsilon_units, spent.delta_units
            session.add(NodeCollaborationRun(
                run_id=run_id, collaboration_id=row.collaboration_id,
                epsilon=cost.epsilon_units, delta=cost.delta_units, state="contributed",
                created_at=self.veil.clock(),
            ))  # fmt: skip
            audit.record(session, "collaboration.contributed", tenant_id=self.enterprise_id,
                         resource=f"collaboration:{run_id}",
                         details={"dataset_id": row.dataset_id, "version": version.version,
                                  "started": started.isoformat(),
                                  "collaboration_id": row.collaboration_id,
                                  "epsilon": cost.epsilon, "delta": cost.delta})  # fmt: skip
        inbox = [
            SealedShares(str(s["sender"]), self.node_id, base64.b64decode(s["nonce"]),
                         base64.b64decode(s["ciphertext"]))
            for s in task["inbox"]
        ]  # fmt: skip
        masked = held.party.masked_input(vector, inbox)
        return {"vector": _b64(np.asarray(masked, dtype="<u8").tobytes())}

    def _veto(self, held: _Round, task: dict[str, Any]) -> dict[str, Any]:
        if held.values is None:
            raise Refused("this node sent no partial in this run")
        cells = release_from_json(held.spec, task["release"]["cells"])
        vetoes = dominance_veto(held.spec, held.values, held.category, cells)
        masked = held.party.masked_again(np.asarray(vetoes, dtype=np.int64).view(np.uint64), "veto")
        return {"vector": _b64(np.asarray(masked, dtype="<u8").tobytes())}

    def _released(self, task: dict[str, Any]) -> dict[str, Any]:
        """Keep the release and where this enterprise stands in it; acknowledge."""
        run_id = str(task["run_id"])
        held = self._rounds.pop(run_id, None)
        standing = None
        if held is not None and held.values is not None:
            cells = release_from_json(held.spec, task["release"]["cells"])
            standing = where_it_stands(held.spec, held.values, held.category, cells)
        with self.veil.db.transaction() as session:
            row = session.get(NodeCollaborationRun, run_id)
            if row is not None:
                row.state, row.release, row.standing = "released", task["release"], standing
        return {}
