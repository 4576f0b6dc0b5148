"""Verifying the audit chain routinely in O(new events) (docs/oversight.md, "Full and
routine verification").

A **full verification** reads every event and checks every signed checkpoint
(``policies.audit.verify``).  Recorded (every worker's upkeep runs one each
``audit_verify_interval_s``; an officer runs one at once with ``veil audit verify --full
--record``), its result goes into the chain itself as an ``audit.verified`` event whose
details the key server signs (``policies.audit.verified_body``, an origin of its own): how
many events it read, whether they held (else the first bad one and why), and its
**anchor**, the newest signed checkpoint among them.

A **routine verification** (the officers' console page, ``GET /v1/audit/verify``, ``veil
audit verify``) starts from the newest ``audit.verified`` record:

- no record: it verifies in full, as before;
- a record whose signature does not hold (forged, or altered): the chain is reported
  broken at that record;
- a record of a broken chain: that is the answer (no later event can mend it);
- otherwise it reads only the events after the record's anchor: the event at the anchor
  must still carry the hash the checkpoint signed, every later event must chain on, every
  later checkpoint's signature must hold, and the head must be the last event.  The
  events after the anchor are hashed with the hash the last switch event at or before it
  names (``audit.chain_hash_switched``: SHA-256 or SM3), then as each later switch says.

What it takes on trust, and for how long: that the events up to the anchor, which the
recorded full verification read, were not altered since.  An alteration there is found by
the next full verification, within ``audit_verify_interval_s``; a rewrite that recomputes
the hashes up to the head breaks the anchor's signed hash and is found at once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from keys import InvalidSignature, Signature, SigningPublicKey, key_operation, verify_signature
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id, utcnow
from policies.principals import Principal
from sandbox.runtime.veil import Veil

log = logging.getLogger(__name__)

ACTION = "audit.verified"


def public_keys(veil: Veil) -> dict[int, SigningPublicKey]:
    """Every version of the audit signing key's public half, by version."""
    return {k.key_version: k for k in veil.keys.signing_public_keys()}


def routine(veil: Veil, principal: Principal | None = None) -> audit.VerifyReport:
    """Verify from the newest recorded full verification (in full when there is none)."""
    if principal is not None:
        require(principal, Capability.VERIFY_AUDIT)
    keys = public_keys(veil)
    with veil.db.read() as session:
        record = session.scalars(
            select(audit.AuditEvent)
            .where(audit.AuditEvent.action == ACTION)
            .order_by(audit.AuditEvent.seq.desc())
            .limit(1)
        ).first()
        if record is None:
            return audit.verify(session, keys)
        details = dict(record.details)
        if not _signed(details, keys):
            problem = f"the record of a full verification at event {record.seq} is not signed"
            return audit.VerifyReport(record.seq, 0, record.seq, problem)
        full_at = datetime.fromisoformat(str(details["at"]))
        if not details["ok"]:
            when = f"{full_at:%Y-%m-%d %H:%M} UTC"
            found = f"{details['problem']} (found by the full verification of {when})"
            bad = details["first_bad_seq"]
            return audit.VerifyReport(int(details["events"]), 0, bad, found, full_at=full_at)
        since = (int(details["anchor_seq"]), str(details["anchor_hash"]))
        report = audit.verify(session, keys, since=since if since[0] else None)
    return audit.VerifyReport(report.events, report.checkpoints, report.first_bad_seq,
                              report.problem, report.from_seq, full_at)  # fmt: skip


def _signed(details: dict[str, Any], keys: dict[int, SigningPublicKey]) -> bool:
    try:
        signature = Signature.from_text(str(details.get("signature")))
        verify_signature(keys[signature.key_version], audit.verified_body(details), signature)
    except (InvalidSignature, KeyError, ValueError):
        return False
    return True


def logged_since_last(veil: Veil) -> bool:
    """Whether any event came after the newest recorded full verification (or none exists)."""
    with veil.db.read() as session:
        head = session.get(audit.AuditHead, 1)
        last = session.scalar(
            select(audit.AuditEvent.seq)
            .where(audit.AuditEvent.action == ACTION)
            .order_by(audit.AuditEvent.seq.desc())
            .limit(1)
        )
    return head is not None and head.seq > (last or 0)


def record_full(veil: Veil, principal: Principal | None = None) -> audit.VerifyReport:
    """Verify every event now and record the result, signed (``audit.verified``)."""
    if principal is not None:
        require(principal, Capability.VERIFY_AUDIT)
    keys = public_keys(veil)
    with veil.db.read() as session:
        report = audit.verify(session, keys)
        anchor = session.execute(
            select(audit.AuditCheckpoint.seq, audit.AuditCheckpoint.head_hash)
            .where(audit.AuditCheckpoint.seq <= report.events)
            .order_by(audit.AuditCheckpoint.seq.desc())
            .limit(1)
        ).first()
    now = utcnow().astimezone(UTC)
    details: dict[str, Any] = {
        "id": new_id("ver"),
        "at": now.isoformat(),
        "events": report.events,
        "anchor_seq": anchor.seq if anchor and report.ok else 0,
        "anchor_hash": anchor.head_hash if anchor and report.ok else audit.GENESIS,
        "ok": report.ok,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
    }
    with key_operation(f"verification:{details['id']}/1"):  # named in the key server's log
        signature = veil.keys.sign(audit.verified_body(details)).to_text()
    with veil.db.transaction() as session:
        audit.record(session, ACTION, actor=principal,
                     outcome=audit.Outcome.OK if report.ok else audit.Outcome.FAILED,
                     details={**details, "signature": signature})  # fmt: skip
    if not report.ok:
        log.error("the audit chain is broken at event %s: %s", report.first_bad_seq,
                  report.problem)  # fmt: skip
    return audit.VerifyReport(report.events, report.checkpoints, report.first_bad_seq,
                              report.problem, 0, now)  # fmt: skip
