"""The runs of a supply-chain analysis between two enterprises, as the control plane relays
them (``docs/collaborations.md``, "Supply-chain analyses").

The template names a *compute* node (whose sandbox runs the joined computation) and an
*other* node.  A run moves through five phases, each answered by one of them, each answer a
document its node's key server signed (the peer checks it; the control plane only relays):

1. ``request`` (compute) — its PSI request on its join keys, and the run's ephemeral
   X25519 public key, to which the other side's rows will be sealed;
2. ``answer`` (other) — its PSI answer, its own ephemeral key (for the intersection), and
   its rules (its minimum of joined rows);
3. ``intersect`` (compute) — the intersection, sealed to the other side's key and padded
   to the size of all its keys (the relay learns nothing of the intersection's size);
4. ``rows`` (other) — the approved columns of the intersecting rows, sealed to the run's
   ephemeral key and padded to the size of all its rows;
5. ``compute`` (compute) — the release of the DP query over the joined table, computed in
   its sandbox, and signed.

Then both nodes acknowledge the release (``released``) and keep it.  A phase not answered
by its deadline, or declined, fails the run: nothing is released.  Once the run ends the
sealed intersection and rows are deleted here (they open only with keys the nodes forgot).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.errors import InvalidRequest
from sandbox.nodes.mirror import verify_node_document
from sandbox.store.collab_models import CollaborationRun, RunMessage, RunStatus
from sandbox.store.node_models import Node

PHASES: Final = ("request", "answer", "intersect", "rows", "compute")
#: Who answers each phase: the compute node is the run's first participant, the other its
#: second.
_BY: Final = {"request": 0, "answer": 1, "intersect": 0, "rows": 1, "compute": 0}
#: The documents' kinds, by phase (each signed by the node that answers it).
KINDS: Final = {phase: f"analysis-{phase}" for phase in PHASES}
#: How long a node has to answer a phase: PSI on 100 000 keys takes tens of seconds.
PHASE_S: Final = 120.0
#: What is deleted when the run ends: sealed to keys the nodes held for the run only.
_SEALED: Final = ("intersect", "rows")


def expected(run: CollaborationRun, phase: str) -> list[str]:
    """The node asked to answer ``phase`` (both acknowledge the release)."""
    if phase in _BY:
        return [run.participants[_BY[phase]]]
    return list(run.participants)


def _message(session: Session, run_id: str, phase: str) -> RunMessage | None:
    return session.scalar(
        select(RunMessage).where(
            RunMessage.run_id == run_id, RunMessage.phase == phase, RunMessage.recipient == ""
        )
    )


def task_fields(session: Session, run: CollaborationRun, node: Node, phase: str) -> dict[str, Any]:
    """What the node needs for ``phase``: the peer's enrolled signing key and the documents
    the peer signed in the phases before (the node checks each signature itself)."""
    peer_id = next((p for p in run.participants if p != node.id), "")
    peer = session.get(Node, peer_id)
    fields: dict[str, Any] = {
        "role": "compute" if run.participants[0] == node.id else "other",
        "peer": {"node_id": peer_id, "signing_key": peer.signing_key if peer else ""},
    }
    if phase in PHASES:
        before = PHASES[: PHASES.index(phase)]
        fields["messages"] = {
            p: m.body for p in before if (m := _message(session, run.id, p)) is not None
        }
    else:
        fields["release"] = run.release
    return fields


def check_answer(node: Node, run: CollaborationRun, phase: str, body: dict[str, Any]) -> None:
    """A signed document of this phase's kind, for this run, signed by ``node`` (the relay
    keeps nothing it could not pass on)."""
    if phase not in PHASES:
        return
    document = verify_node_document(node, body)
    if document.get("kind") != KINDS[phase] or document.get("run_id") != run.id:
        raise InvalidRequest(Msg("the answer is not this run's {phase} document", phase=phase))
    if phase == "compute":
        result = document.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
            raise InvalidRequest(Msg("the compute answer carries the release's rows"))


def advance(session: Session, run: CollaborationRun, now: datetime, answered: set[str]) -> None:
    """Close the current phase once its node answered (or declined), or its deadline passed."""
    phase = run.phase
    node = expected(run, phase)[0]
    message = _message(session, run.id, phase)
    if message is None and now < run.phase_deadline:
        return
    if message is None or message.body.get("declined"):
        why = "declined" if message is not None else "did not answer in time"
        _end(session, run, now, RunStatus.FAILED)
        run.reason = (
            f"the {'compute' if _BY[phase] == 0 else 'other'} side {why} in the {phase} "
            "phase: nothing is released"
        )
        audit.record(session, "collaboration.run_failed", resource=run.id,
                     details={"phase": phase, "answered": len(answered)})  # fmt: skip
        return
    run.answered = {**run.answered, phase: [node]}
    if phase != PHASES[-1]:
        run.phase = PHASES[PHASES.index(phase) + 1]
        run.phase_deadline = now + timedelta(seconds=PHASE_S)
        return
    document = message.body["document"]
    run.release = {**document["result"], "signed_by": node,
                   "signature": message.body["signature"], "document": document}  # fmt: skip
    # Both sides contributed: both are asked to acknowledge (and keep) the release.
    run.answered = {**run.answered, "input": list(run.participants)}
    _end(session, run, now, RunStatus.RELEASED)
    audit.record(session, "collaboration.released", resource=run.id,
                 details={"collaboration": run.collaboration_id, "survivors": 2})  # fmt: skip


def _end(session: Session, run: CollaborationRun, now: datetime, status: str) -> None:
    run.status, run.finished_at = status, now
    session.execute(
        delete(RunMessage).where(RunMessage.run_id == run.id, RunMessage.phase.in_(_SEALED))
    )
