"""Operator endpoints: enterprises, providers, security officers; and /me (tokens:
``routes_tokens``)."""

from __future__ import annotations

from fastapi import APIRouter, status

from policies.principals import Principal, Role
from sandbox.accounts import tenants
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import (
    EnterpriseIn,
    PrincipalOut,
    ProviderIn,
    SecurityOfficerIn,
)

router = APIRouter(prefix="/v1", tags=["principals"])


def out(p: Principal) -> PrincipalOut:
    return PrincipalOut(
        id=p.id,
        role=p.role,
        name=p.name,
        slug=p.slug,
        status=p.status,
        scope=p.scope,
        created_at=p.created_at,
    )


@router.get("/me")
def me(principal: PrincipalDep) -> PrincipalOut:
    """Who the token belongs to."""
    return out(principal)


@router.post("/enterprises", status_code=status.HTTP_201_CREATED)
def create_enterprise(body: EnterpriseIn, veil: VeilDep, caller: PrincipalDep) -> PrincipalOut:
    """Create an enterprise (tenant); its key-server namespace and key are provisioned now."""
    return out(tenants.create_enterprise(veil, caller, body.name, body.slug))


@router.get("/enterprises")
def list_enterprises(veil: VeilDep, caller: PrincipalDep) -> list[PrincipalOut]:
    return [out(p) for p in tenants.list_principals(veil, caller, Role.ENTERPRISE)]


@router.post("/providers", status_code=status.HTTP_201_CREATED)
def create_provider(body: ProviderIn, veil: VeilDep, caller: PrincipalDep) -> PrincipalOut:
    return out(tenants.create_provider(veil, caller, body.name))


@router.get("/providers")
def list_providers(veil: VeilDep, caller: PrincipalDep) -> list[PrincipalOut]:
    """Operators and enterprises (to choose whom to grant) may list providers."""
    return [out(p) for p in tenants.list_principals(veil, caller, Role.PROVIDER)]


@router.post("/security-officers", status_code=status.HTTP_201_CREATED)
def create_security_officer(
    body: SecurityOfficerIn, veil: VeilDep, caller: PrincipalDep
) -> PrincipalOut:
    return out(tenants.create_security_officer(veil, caller, body.name, body.scope))
