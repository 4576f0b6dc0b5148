"""Enterprises grant, and revoke, providers' use of their datasets (audited)."""

from __future__ import annotations

from sqlalchemy import select

from policies import audit
from policies.errors import InvalidRequest, NotFound
from policies.grants import Grant, GrantTerms, create_grant, revoke_grant, visible_grant
from policies.principals import Principal, Role
from sandbox.core import Veil
from sandbox.datasets import owned_dataset, schema_from_json
from sandbox.tenants import require_role


def grant_access(veil: Veil, enterprise: Principal, terms: GrantTerms) -> Grant:
    """Create a grant after checking the provider, the datasets (own) and the columns."""
    require_role(enterprise, Role.ENTERPRISE)
    with veil.db.transaction() as session:
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
                f"columns {', '.join(repr(c) for c in unknown)} are not non-secret columns of "
                "the granted datasets (secret columns can never be granted)"
            )
        grant = create_grant(session, enterprise.id, terms)
        audit.record(
            session,
            "grant.created",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"grant:{grant.id}",
            details={
                "provider_id": grant.provider_id,
                "dataset_ids": grant.dataset_ids,
                "columns": grant.columns,
                "tiers": grant.tiers,
                "purposes": grant.purposes,
                "budget": grant.budget(),
                "valid_until": grant.valid_until.isoformat(),
            },
        )
    return grant


def revoke(veil: Veil, enterprise: Principal, grant_id: str) -> Grant:
    """Revoke at once; queued and running jobs on this grant will not release."""
    require_role(enterprise, Role.ENTERPRISE)
    with veil.db.transaction() as session:
        grant = visible_grant(session, grant_id, enterprise.id)
        if grant.enterprise_id != enterprise.id:
            raise NotFound("grant", grant_id)
        revoke_grant(session, grant)
        audit.record(
            session,
            "grant.revoked",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"grant:{grant.id}",
            details={"provider_id": grant.provider_id},
        )
    return grant


def list_grants(veil: Veil, principal: Principal) -> list[Grant]:
    """An enterprise's grants, or the grants given to a provider."""
    require_role(principal, Role.ENTERPRISE, Role.PROVIDER)
    column = Grant.enterprise_id if principal.role == Role.ENTERPRISE else Grant.provider_id
    with veil.db.transaction() as session:
        return list(
            session.scalars(select(Grant).where(column == principal.id).order_by(Grant.created_at))
        )


def get_grant(veil: Veil, principal: Principal, grant_id: str) -> Grant:
    require_role(principal, Role.ENTERPRISE, Role.PROVIDER)
    with veil.db.transaction() as session:
        return visible_grant(session, grant_id, principal.id)
