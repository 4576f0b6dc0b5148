"""A supply-chain analysis on the node: its part in a run between two enterprises.

The template (``analytics.pair_spec``) names this enterprise's side.  The *compute* side
asks (PSI request on its join keys, and an ephemeral X25519 key made for this run), learns
the intersection, tells it to the other side sealed, receives the other side's approved
columns of the intersecting rows sealed to the run's key, joins them with its own, and runs
the template's DP query in a job sandbox of its own (``sandbox.isolation``): only the
release leaves.  The *other* side answers the PSI request (learning only how many keys the
compute side brought), receives the intersection, checks that it holds every key named,
and sends only those rows' approved columns.

Every message is signed by its node's key server and checked by the peer with the key the
peer enrolled with (relayed by the control plane, as for a benchmark's adverts).  Each side
decides again at each of its phases: its approval and the template's hash, its budget, its
own minimum of joined rows (the stricter side's applies: each checks its own, the compute
side both), once per run.  Each side debits its ledger at its first phase, before anything
of its own leaves, with no refund if the run stops later, and records the run in its audit
chain.  The keys, the intersection and the rows live in this process's memory for the run
only; nothing of the other side is written here.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from analytics.pair_spec import KEY, AnalysisSpec, Side, joined, parse_analysis, reduce_side
from keys.psi import IntersectionReceiver, PsiError, Sender
from keys.sealed import SealedError, open_sealed, public_bytes, seal
from node.protocol.signing import peer_document, sign
from node.work.models import NodeCollaboration, NodeCollaborationRun
from policies import audit
from policies.budget import Budget
from policies.principals import Principal
from sandbox.data.datasets import latest_version, load_frame
from sandbox.isolation.child import Task
from sandbox.isolation.pool import SandboxPool
from sandbox.runtime.veil import Veil

#: What pads a sealed message to a size that says nothing of the intersection.
PAD: Final = b" "


#: The side that answers each phase (the protocol's; never taken from the relay's task).
_ANSWERED_BY: Final = {"request": "compute", "answer": "other", "intersect": "compute",
                       "rows": "other", "compute": "compute"}  # fmt: skip


#: The peer's phase each phase answers.
_ANSWERS: Final = {"answer": "request", "intersect": "answer", "rows": "intersect",
                   "compute": "rows"}  # fmt: skip


class PairRefused(Exception):
    """This node does not take part (audited here; the run fails, nothing is released)."""


@dataclass
class _Pair:
    spec: AnalysisSpec
    side: Side
    frame: pl.DataFrame  # this side's rows, one per key, renamed to the template's names
    started: str
    version: int
    dataset_id: str
    min_rows: int
    receiver: IntersectionReceiver | None = None
    run_key: X25519PrivateKey | None = field(default=None, repr=False)  # compute: the rows'
    peer_box_key: bytes = b""  # compute: the other side's key for the intersection
    job_key: bytes = b""  # other: the compute run's key, for the rows
    intersection: frozenset[str] = frozenset()
    keys_size: int = 0  # compute: the bytes of all its keys, the intersection's padding


def cost_of(spec: AnalysisSpec) -> Budget:
    return Budget.from_floats(spec.epsilon, spec.delta)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise PairRefused("a message of the peer is not base64") from None


def _context(run_id: str, phase: str) -> bytes:
    return f"veil-analysis|{run_id}|{phase}".encode()


def _padded(payload: bytes, size: int) -> bytes:
    """``payload`` padded with spaces to ``size`` bytes (JSON ignores trailing spaces)."""
    return payload + PAD * max(0, size - len(payload))


class PairDesk:
    """The node's side of each analysis run (``CollabDesk`` hands it the phases)."""

    def __init__(self, veil: Veil, node_id: str, enterprise_id: str) -> None:
        self.veil, self.node_id, self.enterprise_id = veil, node_id, enterprise_id
        self._runs: dict[str, _Pair] = {}

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def answer(self, row: NodeCollaboration | None, task: dict[str, Any]) -> dict[str, Any]:
        """This node's signed answer to the task's phase (``row``: its approval; None only
        for the release's acknowledgement)."""
        phase, run_id = str(task["phase"]), str(task["run_id"])
        if phase == "released" or row is None:
            return self._released(task)
        # Which side answers which phase is the protocol's, checked against this node's own
        # approval before anything is read: a relay that asks the compute side for its rows
        # (or the other side to compute) gets nothing.
        if row.category != _ANSWERED_BY.get(phase):
            raise PairRefused(f"this node's side does not answer the {phase} phase")
        messages = dict(task.get("messages") or {})
        # The peer's document this phase answers, checked before anything is read or spent.
        before = _ANSWERS.get(phase)
        peer = self._peer_document(task, messages.get(before), before) if before else {}
        if phase in ("request", "answer"):
            held = self._open(row, task)
        else:
            found = self._runs.get(run_id)
            if found is None:
                raise PairRefused("this node holds no state for the run (it restarted)")
            held = found
        handler = {"request": self._request, "answer": self._answer, "intersect": self._intersect,
                   "rows": self._rows, "compute": self._compute}.get(phase)  # fmt: skip
        if handler is None or held.side.role != _ANSWERED_BY[phase]:
            raise PairRefused(f"this node's side does not answer the {phase} phase")
        body = handler(held, task, peer)
        return sign(self.veil, self.node_id, {"kind": f"analysis-{phase}", "id": run_id,
                                              "run_id": run_id, **body})  # fmt: skip

    # ------------------------------------------------------------ checks

    def _open(self, row: NodeCollaboration, task: dict[str, Any]) -> _Pair:
        """The run's state, from this node's own approval, data and ledger."""
        run_id = str(task["run_id"])
        spec = parse_analysis(row.spec["analysis"])
        side = spec.side_of(self.enterprise_id)
        if side is None or side.role != row.category:
            raise PairRefused("the template does not name this enterprise on this side")
        left = Budget(row.epsilon_cap, row.delta_cap) - Budget(row.epsilon_spent, row.delta_spent)
        if not cost_of(spec).fits_within(left):
            raise PairRefused("the run would exceed the enterprise's budget for this analysis")
        with self.veil.db.read() as session:
            if session.get(NodeCollaborationRun, run_id) is not None:
                raise PairRefused("this node contributed to this run already")
            version = latest_version(session, row.dataset_id)
            enterprise = session.get(Principal, self.enterprise_id)
            if version is None or enterprise is None or not enterprise.slug:
                raise PairRefused("the dataset has no version")
            session.expunge(version)
            tenant = enterprise.slug
        started = self.veil.clock().isoformat()
        frame = load_frame(self.veil, tenant, version)
        with self.veil.db.transaction() as session:  # explains the key's use (audit keys)
            audit.record(session, "collaboration.read", tenant_id=self.enterprise_id,
                         resource=f"collaboration:{run_id}",
                         details={"dataset_id": row.dataset_id, "version": version.version,
                                  "started": started,
                                  "collaboration_id": row.collaboration_id})  # fmt: skip
        local = {common: frame[name] for common, name in row.mapping.items()}
        renamed = pl.DataFrame({c: local[c] for c in [side.key, *(s.name for s in side.columns)]})
        reduced = reduce_side(renamed, side)
        del frame, renamed, local
        if reduced.height > spec.max_keys:
            raise PairRefused("the dataset has more keys than the template allows")
        rules = dict(row.rules or {})
        held = _Pair(spec, side, reduced, started, version.version, row.dataset_id,
                     max(spec.min_rows, int(rules.get("min_rows", 0))))  # fmt: skip
        # Spent now, before anything of this side leaves (its PSI message tells something
        # already), and never refunded: the runs, and so the PSI sessions, a side can be
        # drawn into are bounded by its budget; a second request or answer for the run is
        # refused here (its record exists).
        self._debit(held, run_id, row.collaboration_id)
        self._runs[run_id] = held
        return held

    def _peer_document(self, task: dict[str, Any], signed: Any, phase: str) -> dict[str, Any]:
        """The peer's document of ``phase`` in this run, if the peer's node signed it."""
        peer = dict(task.get("peer") or {})
        document = peer_document(str(peer.get("signing_key")), signed)
        if document is None:
            raise PairRefused(f"the {phase} message is not signed by the peer node")
        if (
            peer.get("node_id") == self.node_id
            or document.get("node_id") != peer.get("node_id")
            or document.get("run_id") != task["run_id"]
            or document.get("kind") != f"analysis-{phase}"
        ):
            raise PairRefused(f"the {phase} message is for another node, run or phase")
        return dict(document)

    def _debit(self, held: _Pair, run_id: str, collaboration_id: str) -> None:
        """Debit this side's ledger and record its contribution (once per run)."""
        cost = cost_of(held.spec)
        with self.veil.db.transaction() as session:
            if session.get(NodeCollaborationRun, run_id) is not None:
                raise PairRefused("this node contributed to this run already")
            ledger = session.get(NodeCollaboration, collaboration_id)
            if ledger is None or ledger.status != "joined":
                raise PairRefused("the enterprise has not approved this analysis")
            spent = Budget(ledger.epsilon_spent, ledger.delta_spent) + cost
            if not spent.fits_within(Budget(ledger.epsilon_cap, ledger.delta_cap)):
                raise PairRefused("the run would exceed the enterprise's budget")
            ledger.epsilon_spent, ledger.delta_spent = spent.epsilon_units, spent.delta_units
            session.add(NodeCollaborationRun(
                run_id=run_id, collaboration_id=collaboration_id, epsilon=cost.epsilon_units,
                delta=cost.delta_units, state="contributed", created_at=self.veil.clock(),
            ))  # fmt: skip
            audit.record(session, "collaboration.contributed", tenant_id=self.enterprise_id,
                         resource=f"collaboration:{run_id}",
                         details={"dataset_id": held.dataset_id, "version": held.version,
                                  "started": held.started, "collaboration_id": collaboration_id,
                                  "side": held.side.role,
                                  "epsilon": cost.epsilon, "delta": cost.delta})  # fmt: skip

    def _record(self, task: dict[str, Any], action: str, rows: int) -> None:
        with self.veil.db.transaction() as session:
            audit.record(session, action, tenant_id=self.enterprise_id,
                         resource=f"collaboration:{task['run_id']}",
                         details={"collaboration_id": str(task["collaboration_id"]),
                                  "rows": rows})  # fmt: skip

    # ------------------------------------------------------------ phases

    def _request(self, held: _Pair, task: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
        """Compute side: the PSI request on its keys, and the run's key for the rows."""
        keys = held.frame[KEY].to_list()
        held.receiver = IntersectionReceiver(str(task["run_id"]), keys)
        held.keys_size = len(json.dumps(sorted(keys)).encode())
        held.run_key = X25519PrivateKey.generate()
        return {"psi": _b64(held.receiver.request()), "run_key": _b64(public_bytes(held.run_key))}

    def _answer(self, held: _Pair, task: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        """Other side: the PSI answer (learning only how many keys the request holds)."""
        held.job_key = _unb64(request.get("run_key"))
        if len(held.job_key) != 32:
            raise PairRefused("the run's key is not an X25519 key")
        sender = Sender(str(task["run_id"]), held.frame[KEY].to_list(), reveal_intersection=True,
                        max_receiver_keys=held.spec.max_keys)  # fmt: skip
        try:
            answer = sender.answer(_unb64(request.get("psi")))
        except PsiError as exc:
            raise PairRefused(f"the PSI request was refused ({exc})") from None
        box_key = X25519PrivateKey.generate()
        held.run_key = box_key  # opens the intersection
        return {"psi": _b64(answer), "box_key": _b64(public_bytes(box_key)),
                "min_rows": held.min_rows}  # fmt: skip

    def _intersect(
        self, held: _Pair, task: dict[str, Any], answer: dict[str, Any]
    ) -> dict[str, Any]:
        """Compute side: the intersection, sealed to the other side, padded to the size of
        all its keys; its own rows narrowed to it."""
        assert held.receiver is not None
        try:
            found = held.receiver.finish(_unb64(answer.get("psi")))
        except PsiError as exc:
            raise PairRefused(f"the PSI answer was refused ({exc})") from None
        theirs = answer.get("min_rows")
        held.min_rows = max(held.min_rows, int(theirs) if isinstance(theirs, int) else 0)
        held.frame = held.frame.filter(pl.col(KEY).is_in(sorted(found)))
        held.intersection = frozenset(held.frame[KEY].to_list())
        if len(held.intersection) < held.min_rows:
            raise PairRefused("the intersection is smaller than the stricter side's minimum")
        plain = json.dumps(sorted(held.intersection)).encode()
        box = seal(_unb64(answer.get("box_key")), _padded(plain, held.keys_size),
                   _context(str(task["run_id"]), "intersect"))  # fmt: skip
        return {"box": _b64(box)}

    def _rows(self, held: _Pair, task: dict[str, Any], sealed: dict[str, Any]) -> dict[str, Any]:
        """Other side: check the intersection names only keys held here; send only those
        rows' approved columns, sealed to the run's key, padded to the size of all rows."""
        assert held.run_key is not None
        try:
            plain = open_sealed(held.run_key, _unb64(sealed.get("box")),
                                _context(str(task["run_id"]), "intersect"))  # fmt: skip
            keys = json.loads(plain)
        except (SealedError, ValueError):
            raise PairRefused("the intersection does not open") from None
        mine = set(held.frame[KEY].to_list())
        if not isinstance(keys, list) or not set(map(str, keys)) <= mine:
            raise PairRefused("the intersection names keys this enterprise does not hold")
        if len(set(keys)) < held.min_rows:
            raise PairRefused("the intersection is smaller than this enterprise's minimum")
        rows = held.frame.filter(pl.col(KEY).is_in(keys))
        everything = _rows_bytes(held.frame)
        self._record(task, "collaboration.rows_sent", rows.height)
        box = seal(held.job_key, _padded(_rows_bytes(rows), len(everything)),
                   _context(str(task["run_id"]), "rows"))  # fmt: skip
        self.forget(str(task["run_id"]))  # nothing of the run is kept here past its rows
        return {"box": _b64(box)}

    def _compute(self, held: _Pair, task: dict[str, Any], sealed: dict[str, Any]) -> dict[str, Any]:
        """Compute side: open the other side's rows, join, and run the DP query in a job
        sandbox; only the release leaves; the run's key and both sides' rows are dropped."""
        run_id = str(task["run_id"])
        assert held.run_key is not None
        try:
            plain = open_sealed(held.run_key, _unb64(sealed.get("box")), _context(run_id, "rows"))
            theirs = pl.read_json(io.BytesIO(plain.rstrip(PAD)))
        except (SealedError, ValueError, pl.exceptions.PolarsError):
            raise PairRefused("the other side's rows do not open") from None
        finally:
            self.forget(run_id)
        expected = [KEY, *(c.name for c in held.spec.other.columns)]
        if theirs.height and (theirs.columns != expected):
            raise PairRefused("the other side's rows are not the template's columns")
        if not set(theirs[KEY].to_list() if theirs.height else []) <= held.intersection:
            raise PairRefused("the other side sent rows outside the intersection")
        table = joined(held.frame, theirs, held.spec)
        del theirs, plain
        if table.height < held.min_rows:
            raise PairRefused("the joined table is smaller than the stricter side's minimum")
        self._record(task, "collaboration.computed", table.height)
        buffer = io.BytesIO()
        table.write_parquet(buffer)
        del table
        spec = held.spec
        job = Task("query", spec.schema, spec.query, epsilon=spec.epsilon, delta=spec.delta)
        pool = self.veil.sandboxes or SandboxPool(self.veil.settings, warm=False)
        answer = pool.take().run(job, buffer.getvalue())
        del buffer
        result = _release(answer.message)
        result["spec_sha256"] = str(task.get("spec_sha256"))
        return {"result": result}

    def _released(self, task: dict[str, Any]) -> dict[str, Any]:
        """Keep the release with this side's receipt; acknowledge."""
        self.forget(str(task["run_id"]))
        with self.veil.db.transaction() as session:
            row = session.get(NodeCollaborationRun, str(task["run_id"]))
            if row is not None:
                row.state, row.release = "released", task.get("release")
        return {}


def _rows_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_json(buffer)
    return buffer.getvalue()


def _release(message: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's tier-3 result, kept to its known fields (the sandbox is not trusted)."""
    result = message.get("result")
    if message.get("type") != "result" or not isinstance(result, dict):
        raise PairRefused("the sandbox returned no release")
    return {k: result[k] for k in ("rows", "epsilon", "delta", "mechanism") if k in result}
