"""The runs of a collaboration: rounds of secure aggregation the control plane relays.

A run moves through these phases; in each, the nodes still in the round answer (a node
that does not answer by the phase's deadline has dropped out):

1. ``advertise`` — each node's two public keys for this run, signed by its key server;
2. ``share`` — each node's Shamir shares of its secrets, sealed for each other node;
3. ``input`` — each node's noised partial, masked (``keys.secure_sum``);
4. ``unmask`` — the survivors' shares that remove the masks: the control plane reads the
   sum of the survivors' noised partials, and nothing else;
5. ``veto`` — each survivor's dominance vetoes on the noisy totals, masked again so that
   only their count per cell is read; a cell some enterprise dominates is suppressed.

The threshold is more than half of the nodes that advertised and at least the proposal's
minimum; a phase answered by fewer fails the run and nothing is released.  Each node decides
again with its own opt-in and ledger whether to take part (``node.work.collab``).
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.collab_spec import BenchmarkError, Kind
from analytics.collab_stats import (
    apply_vetoes,
    release,
    release_from_json,
    release_to_json,
    vector_length,
)
from i18n import Msg
from keys.secure_sum import (
    Advert,
    Reveal,
    SecureSumError,
    Vector,
    summed_again,
    unmasked_sum,
)
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import Principal, Status
from sandbox.collaborations import pairs
from sandbox.collaborations.proposals import (
    ANALYSIS,
    active_members,
    analysis_of,
    benchmark_of,
    kind_of,
    visible,
)
from sandbox.runtime.veil import Veil
from sandbox.store.collab_models import (
    Collaboration,
    CollaborationRun,
    CollaborationStatus,
    RunMessage,
    RunStatus,
)
from sandbox.store.node_models import Node

PHASES = ("advertise", "share", "input", "unmask", "veto")
#: How long the nodes have to answer each phase before those silent count as dropped.
PHASE_S = 20.0
#: A node's waiting claim also returns for a phase that opened this long before the claim
#: began: the node whose answer closes a phase claims again just after its wake went by.
CLAIM_GRACE_S = 2.0
RELEASED_ACK = "released"  # a node's receipt of the release (it keeps it on its node)
MAX_VECTOR = 1 << 16  # entries of a masked vector, more than any benchmark needs


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise InvalidRequest(Msg("{what} is not base64", what=what)) from None


def vector_text(vector: Vector) -> str:
    return _b64(np.asarray(vector, dtype="<u8").tobytes())


def vector_of(text: Any, length: int) -> Vector:
    raw = _unb64(text, "the vector")
    if len(raw) != 8 * length:
        raise InvalidRequest(Msg("the vector has the wrong length"))
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def start(veil: Veil, provider: Principal, collaboration_id: str) -> CollaborationRun:
    """A new run over the members now active: refused (409) when fewer than the minimum."""
    collaboration = visible(veil, provider, collaboration_id)
    require(provider, Capability.PROPOSE_COLLABORATIONS)
    with veil.db.transaction() as session:
        row = session.get(Collaboration, collaboration.id)
        assert row is not None
        if row.status != CollaborationStatus.OPEN:
            raise Conflict(Msg("the collaboration is closed"), code="collaboration_closed")
        proposer = session.get(Principal, row.proposer_id)
        if proposer is None or proposer.status != Status.ACTIVE:
            raise Conflict(Msg("the proposer is suspended"), code="provider_suspended")
        members = active_members(session, row.id)
        if len(members) < row.min_participants:
            audit.record(session, "collaboration.run_refused", actor=provider, resource=row.id,
                         details={"participants": len(members)})  # fmt: skip
            raise Conflict(
                Msg("{n} enterprises take part now, fewer than the {minimum} this "
                    "collaboration needs: nothing runs", n=len(members),
                    minimum=row.min_participants),
                code="too_few_participants",
            )  # fmt: skip
        now = veil.clock()
        participants = [m.node_id for m in members]
        first, seconds = PHASES[0], PHASE_S
        if kind_of(row.spec) == ANALYSIS:
            # The compute side's node first: it answers the odd phases (``pairs``).
            template = analysis_of(row.spec)
            by_enterprise = {m.enterprise_id: m.node_id for m in members}
            participants = [by_enterprise[template.compute.enterprise],
                            by_enterprise[template.other.enterprise]]  # fmt: skip
            first, seconds = pairs.PHASES[0], pairs.PHASE_S
        run = CollaborationRun(
            id=new_id("crun"),
            collaboration_id=row.id,
            requested_by=provider.id,
            status=RunStatus.RUNNING,
            phase=first,
            participants=participants,
            threshold=max(row.min_participants, len(participants) // 2 + 1),
            answered={},
            created_at=now,
            phase_deadline=now + timedelta(seconds=seconds),
        )
        session.add(run)
        audit.record(session, "collaboration.run_started", actor=provider, resource=run.id,
                     details={"collaboration": row.id, "nodes": len(participants)})  # fmt: skip
    veil.wake_nodes()
    return run


def run_summary(run: CollaborationRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "collaboration_id": run.collaboration_id,
        "status": run.status,
        "phase": run.phase,
        "nodes": len(run.participants),
        "survivors": len(run.answered.get("input", [])),
        "threshold": run.threshold,
        "release": run.release if run.status == RunStatus.RELEASED else None,
        "reason": run.reason,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def show(veil: Veil, caller: Principal, collaboration_id: str, run_id: str) -> dict[str, Any]:
    visible(veil, caller, collaboration_id)
    with veil.db.transaction() as session:
        run = session.get(CollaborationRun, run_id, with_for_update=True)
        if run is None or run.collaboration_id != collaboration_id:
            raise NotFound("collaboration run", run_id)
        _advance(session, run, veil.clock())
        return run_summary(run)


# ---------------------------------------------------------------- the nodes' side


def _expected(run: CollaborationRun, phase: str) -> list[str]:
    """The nodes asked to answer ``phase``."""
    if phase in pairs.PHASES or (phase == RELEASED_ACK and run.phase in pairs.PHASES):
        return pairs.expected(run, phase)
    before = {"advertise": None, "share": "advertise", "input": "share", "unmask": "input",
              "veto": "input", RELEASED_ACK: "input"}[phase]  # fmt: skip
    return list(run.participants) if before is None else list(run.answered.get(before, []))


def _senders(session: Session, run_id: str, phase: str) -> set[str]:
    """The nodes that answered ``phase``, declining included."""
    rows = session.scalars(
        select(RunMessage.sender).where(
            RunMessage.run_id == run_id, RunMessage.phase == phase, RunMessage.recipient == ""
        )
    )
    return set(rows)


def _answered(session: Session, run_id: str, phase: str, node_id: str) -> bool:
    """Whether ``node_id`` answered ``phase`` (declining included): one row looked up, not
    every sender's (each node asks; reading all senders for each is N² a phase)."""
    found = session.scalar(
        select(RunMessage.sender).where(
            RunMessage.run_id == run_id, RunMessage.phase == phase,
            RunMessage.sender == node_id, RunMessage.recipient == "",
        ).limit(1)
    )  # fmt: skip
    return found is not None


def _declined(session: Session, run_id: str, phase: str) -> set[str]:
    return {m.sender for m in _messages(session, run_id, phase) if m.body.get("declined")}


def _messages(session: Session, run_id: str, phase: str, recipient: str = "") -> list[RunMessage]:
    return list(
        session.scalars(
            select(RunMessage)
            .where(
                RunMessage.run_id == run_id,
                RunMessage.phase == phase,
                RunMessage.recipient == recipient,
            )
            .order_by(RunMessage.sender)
        )
    )


def tasks(veil: Veil, node: Node) -> list[dict[str, Any]]:
    """What ``node`` is asked to do now, one task per run (advancing runs past deadlines)."""
    now = veil.clock()
    out: list[dict[str, Any]] = []
    moved = False
    with veil.db.transaction() as session:
        # Locked (PostgreSQL): a phase is closed once, however many nodes ask at once.
        runs = session.scalars(
            select(CollaborationRun)
            .where(
                CollaborationRun.status.in_([RunStatus.RUNNING, RunStatus.RELEASED]),
                CollaborationRun.finished_at.is_(None)
                | (CollaborationRun.finished_at > now - timedelta(hours=1)),
            )
            .order_by(CollaborationRun.id)
            .with_for_update()
        ).all()
        for run in runs:
            if node.id not in run.participants:
                continue
            before = (run.status, run.phase)
            if run.status == RunStatus.RUNNING and now >= run.phase_deadline:
                _advance(session, run, now)  # before it, the last answer advanced the run
            moved = moved or (run.status, run.phase) != before
            task = _task(session, run, node)
            if task is not None:
                out.append(task)
    if moved:
        veil.wake_nodes()
    return out


def asks_since(veil: Veil, node: Node, since: datetime) -> bool:
    """Whether a run asks ``node`` to answer a phase that opened after ``since`` (a node's
    waiting claim then returns, so the node answers in its next round)."""
    with veil.db.read() as session:
        runs = session.scalars(
            select(CollaborationRun).where(
                CollaborationRun.status.in_([RunStatus.RUNNING, RunStatus.RELEASED]),
                CollaborationRun.finished_at.is_(None) | (CollaborationRun.finished_at > since),
            )
        ).all()
        for run in runs:
            if node.id not in run.participants:
                continue
            released = run.status == RunStatus.RELEASED
            seconds = pairs.PHASE_S if run.phase in pairs.PHASES else PHASE_S
            opened = (
                run.finished_at if released else run.phase_deadline - timedelta(seconds=seconds)
            )
            if opened is None or opened <= since:
                continue
            phase = RELEASED_ACK if released else run.phase
            if node.id in _expected(run, phase) and not _answered(session, run.id, phase, node.id):
                return True
    return False


def _task(session: Session, run: CollaborationRun, node: Node) -> dict[str, Any] | None:
    phase = RELEASED_ACK if run.status == RunStatus.RELEASED else run.phase
    if run.status not in (RunStatus.RUNNING, RunStatus.RELEASED):
        return None
    if node.id not in _expected(run, phase) or _answered(session, run.id, phase, node.id):
        return None
    collaboration = session.get(Collaboration, run.collaboration_id)
    assert collaboration is not None
    task: dict[str, Any] = {
        "run_id": run.id, "collaboration_id": run.collaboration_id, "phase": phase,
        "spec_sha256": collaboration.spec_sha256, "threshold": run.threshold,
    }  # fmt: skip
    if run.phase in pairs.PHASES:
        task.update(pairs.task_fields(session, run, node, phase))
    elif phase == "share":
        advertised = run.answered.get("advertise", [])
        rows = session.execute(select(Node.id, Node.signing_key).where(Node.id.in_(advertised)))
        keys = {node_id: key for node_id, key in rows}
        task["adverts"] = [
            {"node_id": m.sender, "signing_key": keys[m.sender], "advert": m.body}
            for m in _messages(session, run.id, "advertise") if m.sender in keys
        ]  # fmt: skip
    elif phase == "input":
        task["inbox"] = [{**m.body, "sender": m.sender}
                         for m in _messages(session, run.id, "share", node.id)]  # fmt: skip
    elif phase == "unmask":
        survivors = run.answered.get("input", [])
        task["survivors"] = survivors
        task["dropped"] = sorted(set(run.answered.get("share", [])) - set(survivors))
    elif phase in ("veto", RELEASED_ACK):
        task["release"] = run.release
    return task


def answer(veil: Veil, node: Node, run_id: str, phase: str, body: Any) -> None:
    """Keep ``node``'s answer to ``phase`` of the run (once), and advance the run."""
    if not isinstance(body, dict):
        raise InvalidRequest(Msg("the request body must be a JSON object"))
    with veil.db.transaction() as session:
        run = session.get(CollaborationRun, run_id, with_for_update=True)
        if run is None or node.id not in run.participants:
            raise NotFound("collaboration run", run_id)
        expected = RELEASED_ACK if run.status == RunStatus.RELEASED else run.phase
        if phase != expected or run.status not in (RunStatus.RUNNING, RunStatus.RELEASED):
            raise Conflict(Msg("the run is not asking for this phase now"), code="wrong_phase")
        if node.id not in _expected(run, phase) or _answered(session, run.id, phase, node.id):
            raise Conflict(Msg("this node's answer is not expected"), code="wrong_phase")
        if body.get("declined") is True:
            # The node decided not to take part (its opt-in, ledger or checks; it says no
            # more): the phase need not wait for it.
            session.add(RunMessage(run_id=run.id, phase=phase, sender=node.id, recipient="",
                                   body={"declined": True}))  # fmt: skip
        elif phase == "share":
            _keep_shares(session, run, node, body)
        elif phase in pairs.PHASES:
            pairs.check_answer(node, run, phase, body)
            session.add(RunMessage(run_id=run.id, phase=phase, sender=node.id, recipient="",
                                   body=body))  # fmt: skip
        else:
            _check_answer(session, run, phase, body)
            session.add(RunMessage(run_id=run.id, phase=phase, sender=node.id, recipient="",
                                   body=body))  # fmt: skip
        session.flush()
        before = (run.status, run.phase)
        _advance(session, run, veil.clock())
        moved = (run.status, run.phase) != before
    if moved:
        veil.wake_nodes()  # the next phase is theirs: a waiting claim returns at once


def _check_answer(
    session: Session, run: CollaborationRun, phase: str, body: dict[str, Any]
) -> None:
    if phase == "advertise" and not isinstance(body.get("document"), dict):
        raise InvalidRequest(Msg("an advert is a signed document"))
    if phase in ("input", "veto"):
        if not isinstance(body.get("vector"), str):
            raise InvalidRequest(Msg("a masked vector is base64 text"))
        collaboration = session.get(Collaboration, run.collaboration_id)
        assert collaboration is not None
        spec = benchmark_of(collaboration.spec)
        length = vector_length(spec) if phase == "input" else len(spec.cells) * len(spec.statistics)
        vector_of(body["vector"], length)  # refused now, not when the sum is opened
    if phase == "unmask" and not (
        isinstance(body.get("seeds"), dict) and isinstance(body.get("keys"), dict)
    ):
        raise InvalidRequest(Msg("an unmask answer has 'seeds' and 'keys'"))


def _keep_shares(session: Session, run: CollaborationRun, node: Node, body: dict[str, Any]) -> None:
    sealed = body.get("sealed")
    advertised = set(run.answered.get("advertise", []))
    if not isinstance(sealed, list) or len(sealed) > len(advertised):
        raise InvalidRequest(Msg("'sealed' lists one sealed share per other node"))
    seen: set[str] = set()
    for item in sealed:
        recipient = item.get("recipient") if isinstance(item, dict) else None
        if recipient not in advertised or recipient == node.id or recipient in seen:
            raise InvalidRequest(Msg("a sealed share names no other node of the run"))
        seen.add(str(recipient))
        session.add(RunMessage(run_id=run.id, phase="share", sender=node.id,
                               recipient=str(recipient), body=item))  # fmt: skip
    # An empty marker for the control plane: this node answered the phase.
    session.add(RunMessage(run_id=run.id, phase="share", sender=node.id, recipient="", body={}))


# ---------------------------------------------------------------- moving on


def _advance(session: Session, run: CollaborationRun, now: datetime) -> None:
    """Close the current phase when every node asked answered or its deadline passed."""
    while run.status == RunStatus.RUNNING:
        phase = run.phase
        if phase in pairs.PHASES:
            before = phase
            pairs.advance(session, run, now, _senders(session, run.id, phase))
            if run.phase == before:
                return
            continue
        got = _senders(session, run.id, phase)
        expected = set(_expected(run, phase))
        if not expected <= got and now < run.phase_deadline:
            return
        answered = sorted((got - _declined(session, run.id, phase)) & expected)
        run.answered = {**run.answered, phase: answered}
        if phase == "advertise":
            run.threshold = max(_minimum(session, run), len(answered) // 2 + 1)
        if phase != "veto" and len(answered) < run.threshold:
            _fail(session, run, now, len(answered), phase)
            return
        if phase == "unmask" and not _unmask(session, run, now):
            return
        if phase == "veto":
            _finish(session, run, answered, now)
            return
        run.phase = PHASES[PHASES.index(phase) + 1]
        run.phase_deadline = now + timedelta(seconds=PHASE_S)


def _minimum(session: Session, run: CollaborationRun) -> int:
    collaboration = session.get(Collaboration, run.collaboration_id)
    assert collaboration is not None
    return collaboration.min_participants


def _fail(session: Session, run: CollaborationRun, now: datetime, got: int, phase: str) -> None:
    run.status, run.finished_at = RunStatus.FAILED, now
    run.reason = (
        f"only {got} nodes answered the {phase} phase, fewer than the {run.threshold} "
        "needed: nothing is released"
    )
    audit.record(session, "collaboration.run_failed", resource=run.id,
                 details={"phase": phase, "answered": got, "threshold": run.threshold})  # fmt: skip


def _adverts(session: Session, run: CollaborationRun) -> dict[str, Advert]:
    adverts = {}
    for message in _messages(session, run.id, "advertise"):
        if message.body.get("declined"):
            continue
        document = message.body.get("document", {})
        adverts[message.sender] = Advert(
            message.sender,
            _unb64(document.get("c_public"), "the advert's key"),
            _unb64(document.get("s_public"), "the advert's key"),
        )
    return adverts


def _reveal(message: RunMessage) -> Reveal | None:
    """A survivor's unmask shares; None when they are not shares (that answer is left out:
    the others open the sum if they reach the threshold)."""

    def pairs(value: Any) -> dict[str, tuple[int, int]]:
        return {str(k): (int(v[0]), int(v[1])) for k, v in dict(value).items()}

    try:
        return Reveal(message.sender, pairs(message.body["seeds"]), pairs(message.body["keys"]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _unmask(session: Session, run: CollaborationRun, now: datetime) -> bool:
    """The sum of the survivors' noised partials, and the statistics it releases (pending
    the dominance vetoes)."""
    collaboration = session.get(Collaboration, run.collaboration_id)
    assert collaboration is not None
    spec = benchmark_of(collaboration.spec)
    survivors = run.answered["input"]
    length = vector_length(spec)
    try:  # a node's malformed answer fails the run (nothing released), never the server
        inputs = _messages(session, run.id, "input")
        masked = {m.sender: vector_of(m.body["vector"], length)
                  for m in inputs if m.sender in survivors}  # fmt: skip
        answers = [m for m in _messages(session, run.id, "unmask")
                   if m.sender in run.answered["unmask"]]  # fmt: skip
        reveals = [r for m in answers if (r := _reveal(m)) is not None]
        total = unmasked_sum(run.id, run.threshold, _adverts(session, run),
                             run.answered["share"], masked, reveals)  # fmt: skip
        cells = release(spec, total, len(survivors), run.threshold)
    except (SecureSumError, InvalidRequest, BenchmarkError, KeyError, ValueError, TypeError):
        run.status, run.finished_at = RunStatus.FAILED, now
        run.reason = "the unmask answers did not open the sum: nothing is released"
        audit.record(session, "collaboration.run_failed", resource=run.id,
                     details={"phase": "unmask"})  # fmt: skip
        return False
    run.release = {"cells": release_to_json(cells), "survivors": len(survivors)}
    return True


def _finish(session: Session, run: CollaborationRun, answered: list[str], now: datetime) -> None:
    """Apply the survivors' dominance vetoes (all of them must answer, or the cells the rule
    checks are suppressed) and release."""
    survivors = run.answered["input"]
    assert run.release is not None
    masked = {m.sender: m.body["vector"] for m in _messages(session, run.id, "veto")
              if m.sender in answered}  # fmt: skip
    collaboration = session.get(Collaboration, run.collaboration_id)
    assert collaboration is not None
    spec = benchmark_of(collaboration.spec)
    cells = release_from_json(spec, run.release["cells"])
    length = len(spec.cells) * len(spec.statistics)
    vetoes: Vector | None = None
    if set(masked) == set(survivors):
        try:
            vectors = {k: vector_of(v, length) for k, v in masked.items()}
            vetoes = summed_again(survivors, vectors)
        except (SecureSumError, InvalidRequest):
            vetoes = None
    checked = vetoes is not None
    if vetoes is None:
        # Unchecked: every total the dominance rule looks at is suppressed.
        kinds = [stat.kind in (Kind.SUM, Kind.MEAN) for stat in spec.statistics]
        vetoes = np.array(kinds * len(spec.cells), dtype=np.int64).astype(np.uint64)
    released = apply_vetoes(cells, vetoes.view(np.int64))
    # The stored cells keep the noisy totals the vetoes were decided on only where released.
    run.release = {**run.release, "cells": release_to_json(released),
                   "dominance_checked": checked}  # fmt: skip
    run.status, run.finished_at = RunStatus.RELEASED, now
    audit.record(session, "collaboration.released", resource=run.id,
                 details={"collaboration": run.collaboration_id,
                          "survivors": len(survivors)})  # fmt: skip
