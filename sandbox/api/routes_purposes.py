"""The city's purpose vocabulary: everyone reads it; the operator (MANAGE_PURPOSES) keeps it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from policies.purposes import CODE_MAX, describe
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import PurposeIn, PurposeOut
from sandbox.grants import purposes

router = APIRouter(prefix="/v1/purposes", tags=["purposes"])

Code = Annotated[str, Path(min_length=1, max_length=CODE_MAX)]


@router.get("")
def list_purposes(veil: VeilDep, caller: PrincipalDep) -> list[PurposeOut]:
    """Every purpose, retired ones included (new grants may name only the others)."""
    return [PurposeOut.model_validate(describe(p)) for p in purposes.purposes(veil, caller)]


@router.put("/{code}")
def set_purpose(code: Code, body: PurposeIn, veil: VeilDep, caller: PrincipalDep) -> PurposeOut:
    """Add a purpose, rename it, retire it (``retired: true``) or restore it (audited)."""
    purpose = purposes.set_one(veil, caller, code, body.name_zh, body.name_en, retired=body.retired)
    return PurposeOut.model_validate(describe(purpose))
