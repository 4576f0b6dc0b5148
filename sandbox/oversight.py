"""Reading and verifying the audit log (operators and security officers)."""

from __future__ import annotations

from sqlalchemy import select

from policies import audit
from policies.principals import Principal, Role
from sandbox.core import Veil
from sandbox.tenants import require_role


def list_events(
    veil: Veil, principal: Principal, *, before_seq: int | None = None, limit: int = 100
) -> list[audit.AuditEvent]:
    """Newest first; a scoped security officer sees only the enterprises it oversees."""
    require_role(principal, Role.OPERATOR, Role.SECURITY_OFFICER)
    query = select(audit.AuditEvent).order_by(audit.AuditEvent.seq.desc()).limit(limit)
    if before_seq is not None:
        query = query.where(audit.AuditEvent.seq < before_seq)
    if principal.role == Role.SECURITY_OFFICER and principal.scope is not None:
        query = query.where(audit.AuditEvent.tenant_id.in_(principal.scope))
    with veil.db.transaction() as session:
        return list(session.scalars(query))


def verify_chain(veil: Veil, principal: Principal | None = None) -> audit.VerifyReport:
    """Recompute the whole chain and check every signed checkpoint."""
    if principal is not None:
        require_role(principal, Role.OPERATOR, Role.SECURITY_OFFICER)
    public_keys = {k.key_version: k for k in veil.keys.signing_public_keys()}
    with veil.db.transaction() as session:
        return audit.verify(session, public_keys)


def sign_checkpoint(veil: Veil, principal: Principal) -> audit.AuditCheckpoint | None:
    require_role(principal, Role.OPERATOR, Role.SECURITY_OFFICER)
    return veil.checkpoint()
