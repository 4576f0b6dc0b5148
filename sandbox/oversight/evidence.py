"""Evidence packs for insurers and auditors: one grant's letter, a usage receipt and the audit
range, signed in one file that ``veil evidence verify`` checks offline
(:mod:`sandbox.oversight.evidence_format`).

Who may ask is who may take receipts: the enterprise about its own grants, security
officers about the enterprises in their scope, the operator about any; a provider may not.
The receipt covers the provider's use of the enterprise's data from the grant's creation
(at most 366 days back) to now; the audit export runs from the grant's ``grant.created``
event to the chain's head after the receipt, elided to the enterprise's events.  Issuing
is audited (``evidence.issued``, with the pack's SHA-256).
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from i18n import Msg
from keys import key_operation
from policies import audit, audit_export
from policies.capabilities import Capability, may, require
from policies.db import new_id
from policies.errors import Conflict, NotFound
from policies.grants import Grant
from policies.letters import letter_for
from policies.principals import Principal
from sandbox.oversight.audit_log import verify_chain
from sandbox.oversight.evidence_format import FORMAT, sign_pack
from sandbox.oversight.receipt_format import canonical
from sandbox.oversight.receipts import MAX_PERIOD, build_receipt
from sandbox.runtime.veil import Veil


def _grant_for(veil: Veil, caller: Principal, grant_id: str) -> Grant:
    require(caller, Capability.READ_RECEIPTS)
    with veil.db.read() as session:
        grant = session.get(Grant, grant_id)
        if grant is None:
            raise NotFound("grant", grant_id)
        own = may(caller, Capability.OWN_DATA)
        if (own and grant.enterprise_id != caller.id) or not may(
            caller, Capability.READ_RECEIPTS, grant.enterprise_id
        ):
            raise NotFound("grant", grant_id)  # another's answers like an unknown one
        return grant


def build_pack(veil: Veil, caller: Principal, grant_id: str) -> dict[str, Any]:
    """Issue the grant's evidence pack (its letter must be signed by both parties)."""
    grant = _grant_for(veil, caller, grant_id)
    if grant.node_signed is not None:  # its letter and audit trail are the node's
        raise Conflict(
            Msg(
                "this grant is held on its enterprise's node, which keeps its letter and "
                "audit trail: the enterprise takes the evidence pack from its node "
                "('veil evidence create' with the node's URL)"
            ),
            code="data_on_node",
        )
    with veil.db.read() as session:
        letter = letter_for(session, grant.id)
        created = session.scalars(
            select(audit.AuditEvent.seq)
            .where(
                audit.AuditEvent.action == "grant.created",
                audit.AuditEvent.resource == f"grant:{grant.id}",
            )
            .limit(1)
        ).first()
    if letter is None or letter.provider_signature is None:
        raise Conflict(
            Msg("an evidence pack needs the grant's commitment letter signed by both parties")
        )
    if created is None:  # pragma: no cover - every grant's creation is audited
        raise Conflict(Msg("the grant's creation is not in the audit log"))
    now = veil.clock()
    since = max(grant.created_at, now - MAX_PERIOD + timedelta(seconds=1))
    own = may(caller, Capability.OWN_DATA)
    receipt = build_receipt(
        veil,
        caller,
        grant.provider_id,
        since,
        now,
        None if own else grant.enterprise_id,
    )
    report = verify_chain(veil)
    if not report.ok:
        raise Conflict(
            Msg(
                "the audit chain is broken at event {first_bad_seq}; nothing is signed over "
                "it: run `veil audit verify` on the server",
                first_bad_seq=report.first_bad_seq,
            )
        )
    pack_id = new_id("evp")
    with veil.db.transaction() as session, key_operation(f"evidence:{pack_id}/1"):
        head = session.get(audit.AuditHead, 1, with_for_update=True)
        assert head is not None  # the receipt's issue was audited
        plan = audit_export.plan_export(
            session,
            created,
            head.seq,
            scope=[grant.enterprise_id],
            exported_by=caller.id,
            exported_at=now,
            sign=veil.keys.sign,
        )
        lines = [
            line.decode().rstrip("\n")
            for line in audit_export.export_lines(lambda: nullcontext(session), plan)
        ]
        body = {
            "format": FORMAT,
            "id": pack_id,
            "issued_at": now.isoformat(),
            "issued_to": {"id": caller.id, "role": caller.role, "name": caller.name},
            "grant_id": grant.id,
            "letter": letter.full(),
            "receipt": receipt,
            "audit_export": lines,
        }
        pack = sign_pack(body, veil.keys.sign)
        audit.record(
            session,
            "evidence.issued",
            actor=caller,
            tenant_id=grant.enterprise_id,
            resource=f"grant:{grant.id}",
            details={
                "pack_id": pack_id,
                "audit_range": [created, head.seq],
                "receipt_id": receipt["id"],
                "pack_sha256": hashlib.sha256(canonical(pack)).hexdigest(),
            },
        )
    return pack
