"""Grants: an enterprise grants, lists and revokes; a provider sees what it was granted."""

from __future__ import annotations

from fastapi import APIRouter, status

from policies.grants import Grant, GrantTerms, describe
from sandbox import consent
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import GrantIn, GrantOut

router = APIRouter(prefix="/v1/grants", tags=["grants"])


def out(grant: Grant) -> GrantOut:
    return GrantOut.model_validate(describe(grant))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_grant(body: GrantIn, veil: VeilDep, caller: PrincipalDep) -> GrantOut:
    """Grant a provider datasets, columns, tiers, purposes, a validity window and a budget."""
    terms = GrantTerms(
        provider_id=body.provider_id,
        dataset_ids=tuple(body.dataset_ids),
        columns=tuple(body.columns),
        tiers=tuple(body.tiers),
        purposes=tuple(body.purposes),
        valid_from=body.valid_from or veil.clock(),
        valid_until=body.valid_until,
        epsilon=body.epsilon,
        delta=body.delta,
    )
    return out(consent.grant_access(veil, caller, terms))


@router.get("")
def list_grants(veil: VeilDep, caller: PrincipalDep) -> list[GrantOut]:
    return [out(g) for g in consent.list_grants(veil, caller)]


@router.get("/{grant_id}")
def get_grant(grant_id: str, veil: VeilDep, caller: PrincipalDep) -> GrantOut:
    return out(consent.get_grant(veil, caller, grant_id))


@router.post("/{grant_id}/revoke")
def revoke_grant(grant_id: str, veil: VeilDep, caller: PrincipalDep) -> GrantOut:
    """Revoke at once: no further job, queued or new, releases anything under it."""
    return out(consent.revoke(veil, caller, grant_id))
