"""Reading, exporting and verifying the audit log (operators and security officers).

A scoped security officer sees only the events of the enterprises it oversees:
searches filter by tenant, and exports elide the other events (keeping their
hashes, so the chain still verifies offline).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select

from i18n import Msg
from keys import SigningPublicKey, key_operation
from policies import audit, audit_export
from policies.capabilities import Capability, require, tenants_in_scope
from policies.errors import Conflict, InvalidRequest
from policies.principals import Principal, Role
from sandbox.runtime.veil import Veil
from sandbox.runtime.verification import public_keys


@dataclass(frozen=True)
class EventFilter:
    """What to search for; every field is optional, and a trailing ``*`` on ``action`` or
    ``resource`` matches a prefix (``job.*``, ``dataset:ds_12*``)."""

    since: datetime | None = None
    until: datetime | None = None
    tenant_id: str | None = None
    actor_id: str | None = None
    role: str | None = None
    action: str | None = None
    outcome: str | None = None
    resource: str | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in {r.value for r in Role}:
            raise InvalidRequest(
                Msg(
                    "role must be one of {allowed}; got an unknown role",
                    allowed=", ".join(r.value for r in Role),
                )
            )
        if self.outcome is not None and self.outcome not in {o.value for o in audit.Outcome}:
            raise InvalidRequest(
                Msg(
                    "outcome must be one of {allowed}",
                    allowed=", ".join(o.value for o in audit.Outcome),
                )
            )
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidRequest(
                    Msg(
                        "{name} needs a time zone, e.g. 2026-11-01T00:00:00Z",
                        name=name,
                    )
                )
        if self.since and self.until and self.since >= self.until:
            raise InvalidRequest(Msg("since must be before until"))

    def apply(self, query: Select[tuple[audit.AuditEvent]]) -> Select[tuple[audit.AuditEvent]]:
        event = audit.AuditEvent
        exact = {
            event.tenant_id: self.tenant_id,
            event.actor_id: self.actor_id,
            event.actor_role: self.role,
            event.outcome: self.outcome,
        }
        for column, value in exact.items():
            if value is not None:
                query = query.where(column == value)
        for column, pattern in ((event.action, self.action), (event.resource, self.resource)):
            if pattern is not None:
                if pattern.endswith("*"):
                    # A case-sensitive prefix on both databases, as ``==`` is: SQLite's LIKE
                    # ignores ASCII case and PostgreSQL's does not.
                    prefix = pattern[:-1]
                    query = query.where(func.substr(column, 1, len(prefix)) == prefix)
                else:
                    query = query.where(column == pattern)
        if self.since is not None:
            query = query.where(event.at >= self.since)
        if self.until is not None:
            query = query.where(event.at < self.until)
        return query


def _scoped(
    principal: Principal, query: Select[tuple[audit.AuditEvent]]
) -> Select[tuple[audit.AuditEvent]]:
    scope = tenants_in_scope(principal).as_list()
    if scope is not None:
        query = query.where(audit.AuditEvent.tenant_id.in_(scope))
    return query


def list_events(
    veil: Veil,
    principal: Principal,
    *,
    where: EventFilter | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> list[audit.AuditEvent]:
    """Events matching ``where``, newest first, ``limit`` of them before ``before_seq``."""
    require(principal, Capability.READ_AUDIT)
    query = select(audit.AuditEvent).order_by(audit.AuditEvent.seq.desc()).limit(limit)
    if before_seq is not None:
        query = query.where(audit.AuditEvent.seq < before_seq)
    query = _scoped(principal, (where or EventFilter()).apply(query))
    with veil.db.read() as session:
        return list(session.scalars(query))


def verify_chain(veil: Veil, principal: Principal | None = None) -> audit.VerifyReport:
    """Recompute the whole chain and check every signed checkpoint."""
    if principal is not None:
        require(principal, Capability.VERIFY_AUDIT)
    # A read transaction: one consistent snapshot, without holding up writers meanwhile.
    with veil.db.read() as session:
        return audit.verify(session, public_keys(veil))


def public_keys_pem(veil: Veil) -> str:
    """Every version of the audit signing key's public half, PEM blocks one after another.

    Not secret: any principal may fetch it, e.g. an enterprise handing on a receipt."""
    return "".join(key.to_pem() for key in sorted(public_keys(veil).values(), key=_version))


def _version(key: SigningPublicKey) -> int:
    return key.key_version


def sign_checkpoint(veil: Veil, principal: Principal) -> audit.AuditCheckpoint | None:
    require(principal, Capability.VERIFY_AUDIT)
    return veil.checkpoint()


def _resolve_range(
    veil: Veil,
    from_seq: int | None,
    to_seq: int | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[int, int]:
    """The positions a range of sequence numbers or of times covers."""
    if (from_seq is not None or to_seq is not None) and (since or until):
        raise InvalidRequest(
            Msg("give a range by positions (from_seq, to_seq) or by time, not both")
        )
    EventFilter(since=since, until=until)  # validates the times
    event = audit.AuditEvent
    with veil.db.read() as session:
        query = select(func.min(event.seq), func.max(event.seq))
        if since is not None:
            query = query.where(event.at >= since)
        if until is not None:
            query = query.where(event.at < until)
        low, high = session.execute(query).one()
    if low is None:
        raise InvalidRequest(Msg("there are no audit events in that time range; widen it"))
    first = from_seq if from_seq is not None else low
    last = to_seq if to_seq is not None else high
    if first < 1 or last < first:
        raise InvalidRequest(Msg("from_seq must be at least 1 and at most to_seq"))
    if last > high:
        raise InvalidRequest(
            Msg(
                "to_seq is past the newest event ({high})",
                high=high,
            )
        )
    return first, last


def export(
    veil: Veil,
    principal: Principal,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[bytes]:
    """A signed export of a range (see :mod:`policies.audit_export`), as lines to stream.

    The whole chain is verified first: a manifest is never signed over a broken chain.
    The export itself is audited.
    """
    require(principal, Capability.READ_AUDIT)
    first, last = _resolve_range(veil, from_seq, to_seq, since, until)
    report = verify_chain(veil)
    if not report.ok:
        raise Conflict(
            Msg(
                "the audit chain is broken at event {first_bad_seq} ({problem}); "
                "nothing is exported under a signature: run `veil audit verify` "
                "on the server",
                first_bad_seq=report.first_bad_seq,
                problem=report.problem,
            )
        )
    scope = tenants_in_scope(principal).as_list()
    with veil.db.transaction() as session, key_operation(f"export:{first}-{last}/1"):
        plan = audit_export.plan_export(
            session,
            first,
            last,
            scope=scope,
            exported_by=principal.id,
            exported_at=veil.clock(),
            sign=veil.keys.sign,
        )
        audit.record(
            session,
            "audit.exported",
            actor=principal,
            resource=f"audit:{first}-{last}",
            details={
                "from_seq": first,
                "to_seq": last,
                "events": plan.manifest["events"],
                "elided": plan.manifest["elided"],
            },
        )
    return audit_export.export_lines(veil.db.read, plan)
