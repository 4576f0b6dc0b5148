"""Operator endpoints: enterprises, providers, security officers; and /me (tokens:
``routes_tokens``)."""

from __future__ import annotations

from fastapi import APIRouter, status

from policies.principals import Principal, Role
from sandbox.accounts import categories, tenants
from sandbox.accounts.categories import Category
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import (
    BureauIn,
    CategoriesIn,
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
        **(categories.current(p) if p.role == Role.ENTERPRISE else {}),
        created_at=p.created_at,
    )


def given_categories(body: CategoriesIn) -> dict[Category, str | None]:
    """The categories the body names (left out: unchanged)."""
    return {Category(name): getattr(body, name) for name in body.model_fields_set & set(Category)}


@router.get("/me")
def me(principal: PrincipalDep) -> PrincipalOut:
    """Who the token belongs to."""
    return out(principal)


@router.post("/enterprises", status_code=status.HTTP_201_CREATED)
def create_enterprise(body: EnterpriseIn, veil: VeilDep, caller: PrincipalDep) -> PrincipalOut:
    """Create an enterprise (tenant); its key-server namespace and key are provisioned now."""
    made = tenants.create_enterprise(veil, caller, body.name, body.slug, given_categories(body))
    return out(made)


@router.patch("/enterprises/{enterprise_id}/categories")
def set_enterprise_categories(
    enterprise_id: str, body: CategoriesIn, veil: VeilDep, caller: PrincipalDep
) -> PrincipalOut:
    """Set an enterprise's public categories (operator): industry, district, size band."""
    return out(categories.set_categories(veil, caller, enterprise_id, given_categories(body)))


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


@router.post("/bureau", status_code=status.HTTP_201_CREATED)
def create_bureau(body: BureauIn, veil: VeilDep, caller: PrincipalDep) -> PrincipalOut:
    """Create the programme's bureau (the city's 工信局; one per programme)."""
    return out(tenants.create_bureau(veil, caller, body.name))
