"""Grants: an enterprise grants, narrows, extends and revokes; a provider sees its own."""

from __future__ import annotations

from fastapi import APIRouter, status

from policies.grants import Grant, GrantChange, GrantTerms, describe
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import GrantChangeIn, GrantIn, GrantOut, RevokeIn
from sandbox.grants import consent

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
        min_group_size=body.min_group_size,
    )
    return out(consent.grant_access(veil, caller, terms))


@router.get("")
def list_grants(veil: VeilDep, caller: PrincipalDep) -> list[GrantOut]:
    return [out(g) for g in consent.list_grants(veil, caller)]


@router.get("/{grant_id}")
async def get_grant(grant_id: str, veil: VeilDep, caller: PrincipalDep) -> GrantOut:
    # async: the read needs no worker thread on SQLite (``Database.read_row``).
    return out(await consent.read_grant(veil, caller, grant_id))


@router.patch("/{grant_id}")
def change_grant(
    grant_id: str, body: GrantChangeIn, veil: VeilDep, caller: PrincipalDep
) -> GrantOut:
    """Narrow (fewer columns, tiers, purposes; less budget; larger cells) or extend validity."""
    changes = GrantChange(
        columns=tuple(body.columns) if body.columns is not None else None,
        tiers=tuple(body.tiers) if body.tiers is not None else None,
        purposes=tuple(body.purposes) if body.purposes is not None else None,
        epsilon=body.epsilon,
        delta=body.delta,
        valid_until=body.valid_until,
        min_group_size=body.min_group_size,
    )
    return out(consent.change(veil, caller, grant_id, changes, body.reason))


@router.post("/{grant_id}/revoke")
def revoke_grant(
    grant_id: str, veil: VeilDep, caller: PrincipalDep, body: RevokeIn | None = None
) -> GrantOut:
    """Revoke at once; the grant's queued jobs are cancelled and nothing more is released."""
    return out(consent.revoke(veil, caller, grant_id, body.reason if body else None))
