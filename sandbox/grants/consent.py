"""Enterprises grant, narrow, extend and revoke providers' use of their datasets (audited).

Every change records who made it and why.  Revocation cancels the grant's
queued jobs at once; a job already running re-checks its grant before it
releases anything.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, select

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, may, require
from policies.errors import InvalidRequest, NotFound
from policies.grants import (
    Grant,
    GrantChange,
    GrantTerms,
    change_grant,
    create_grant,
    describe,
    revoke_grant,
    visible,
    visible_grant,
)
from policies.principals import Principal, Role
from policies.purposes import require_current
from sandbox.accounts.tenants import require_reason
from sandbox.data.datasets import owned_dataset, schema_from_json
from sandbox.jobs.submit import cancel_queued_jobs
from sandbox.runtime.veil import Veil
from sandbox.store.node_models import refuse_if_on_node
from sandbox.store.rows import RowQuery


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def grant_access(veil: Veil, enterprise: Principal, terms: GrantTerms) -> Grant:
    """Create a grant after checking the provider, the datasets (own) and the columns."""
    require(enterprise, Capability.GRANT_ACCESS)
    with veil.db.transaction() as session:
        refuse_if_on_node(session, enterprise.id)
        provider = session.get(Principal, terms.provider_id)
        if provider is None or provider.role != Role.PROVIDER:
            raise NotFound("provider", terms.provider_id)
        known: set[str] = set()
        for dataset_id in terms.dataset_ids:
            schema = schema_from_json(owned_dataset(session, enterprise, dataset_id).declaration)
            known |= {c.name for c in schema.columns if c.column_class != "secret"}
        unknown = sorted(set(terms.columns) - known)
        if unknown:
            raise InvalidRequest(
                Msg(
                    "columns {columns} are not non-secret columns of the granted "
                    "datasets (secret columns can never be granted)",
                    columns=", ".join(repr(c) for c in unknown),
                )
            )
        terms = replace(terms, letter_required=veil.settings.commitment_letters)
        grant = create_grant(
            session, enterprise.id, terms, min_group_floor=veil.settings.sdc_min_count_floor
        )
        # New grants name purposes from the city's vocabulary only (checked after the
        # terms' own rules; a refusal rolls the grant back).
        require_current(session, terms.purposes)
        audit.record(
            session,
            "grant.created",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"grant:{grant.id}",
            details=_jsonable({k: v for k, v in describe(grant).items() if k != "id"}),
        )
    return grant


def _own_grant(session: Any, enterprise: Principal, grant_id: str) -> Grant:
    refuse_if_on_node(session, enterprise.id)  # the node's grants change on the node
    grant = visible_grant(session, grant_id, enterprise.id)
    if grant.enterprise_id != enterprise.id:
        raise NotFound("grant", grant_id)
    return grant


def change(
    veil: Veil, enterprise: Principal, grant_id: str, changes: GrantChange, reason: str | None
) -> Grant:
    """Narrow a grant (columns, tiers, purposes, budget, min group size) or extend its validity."""
    require(enterprise, Capability.GRANT_ACCESS)
    why = require_reason(reason)
    with veil.db.transaction() as session:
        grant = _own_grant(session, enterprise, grant_id)
        diff = change_grant(session, grant, changes, veil.clock())
        if not diff:
            raise InvalidRequest(Msg("nothing to change: every given field equals the grant's"))
        audit.record(
            session,
            "grant.changed",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"grant:{grant.id}",
            details=_jsonable({"reason": why, "changes": diff}),
        )
    return grant


def revoke(veil: Veil, enterprise: Principal, grant_id: str, reason: str | None = None) -> Grant:
    """Revoke at once and cancel the grant's queued jobs."""
    require(enterprise, Capability.GRANT_ACCESS)
    why = (reason or "").strip()[:500] or "no reason given"
    with veil.db.transaction() as session:
        grant = _own_grant(session, enterprise, grant_id)
        revoke_grant(session, grant)
        audit.record(
            session,
            "grant.revoked",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"grant:{grant.id}",
            details={"provider_id": grant.provider_id, "reason": why},
        )
        cancel_queued_jobs(
            session, grant_ids=[grant.id], why="the grant was revoked", now=veil.clock()
        )
    return grant


def list_grants(veil: Veil, principal: Principal) -> list[Grant]:
    """An enterprise's grants, or the grants given to a provider."""
    require(principal, Capability.READ_GRANTS)
    column = Grant.enterprise_id if may(principal, Capability.OWN_DATA) else Grant.provider_id
    with veil.db.read() as session:
        return list(
            session.scalars(select(Grant).where(column == principal.id).order_by(Grant.created_at))
        )


# Built once, run without a session (``Database.read_row``): the most common read of the API.
_GRANT_BY_ID = RowQuery((Grant,), lambda query: query.where(Grant.id == bindparam("grant_id")))


def get_grant(veil: Veil, principal: Principal, grant_id: str) -> Grant:
    """A grant its enterprise or its provider may see; :class:`NotFound` for anyone else."""
    require(principal, Capability.READ_GRANTS)
    row = veil.db.read_row_now(_GRANT_BY_ID, {"grant_id": grant_id})
    return visible(row[0] if row else None, grant_id, principal.id)


async def read_grant(veil: Veil, principal: Principal, grant_id: str) -> Grant:
    """:func:`get_grant` for async code (on SQLite without a trip through the thread pool)."""
    require(principal, Capability.READ_GRANTS)
    row = await veil.db.read_row(_GRANT_BY_ID, {"grant_id": grant_id})
    return visible(row[0] if row else None, grant_id, principal.id)
