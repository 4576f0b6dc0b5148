"""Commitment letters: a provider registers its key and signs; an enterprise issues."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from policies.letters import CommitmentLetter
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.routes_receipts import PAGE_POLICY
from sandbox.api.schemas import (
    LetterIn,
    LetterOut,
    LetterSignatureIn,
    ProviderKeyIn,
    ProviderKeyOut,
)
from sandbox.grants import letter_page, letters
from sandbox.oversight import evidence

router = APIRouter(prefix="/v1", tags=["letters"])


def out(letter: CommitmentLetter, enterprise_key: str | None = None) -> LetterOut:
    state = "shredded" if letter.shredded_at else "signed" if letter.signed_at else None
    return LetterOut(
        grant_id=letter.grant_id,
        status=state or "awaiting_signature",
        retain_until=letter.retain_until,
        signed_at=letter.signed_at,
        shredded_at=letter.shredded_at,
        letter=letter.full(),
        enterprise_key_pem=enterprise_key,
    )


@router.post("/letters/keys", status_code=status.HTTP_201_CREATED)
def register_key(body: ProviderKeyIn, veil: VeilDep, caller: PrincipalDep) -> ProviderKeyOut:
    """A provider registers the Ed25519 public key it signs letters with (its newest is named
    in each letter issued afterwards)."""
    key = letters.add_key(veil, caller, body.public_key_pem)
    return ProviderKeyOut(id=key.id, fingerprint=key.fingerprint, created_at=key.created_at)


@router.post("/grants/{grant_id}/letter", status_code=status.HTTP_201_CREATED)
def issue_letter(grant_id: str, body: LetterIn, veil: VeilDep, caller: PrincipalDep) -> LetterOut:
    """The enterprise issues its grant's commitment letter, signed by Veil for it."""
    letter = letters.issue(veil, caller, grant_id, body.retention_days, body.insurance_reference)
    return out(letter)


@router.get("/grants/{grant_id}/letter", response_model=None)
def get_letter(
    grant_id: str,
    veil: VeilDep,
    caller: PrincipalDep,
    fmt: Annotated[Literal["json", "html"], Query(alias="format")] = "json",
) -> Response:
    """The grant's letter (its enterprise and its provider); ``format=html``: the printable
    page.  Verify offline: ``veil letters verify``."""
    letter = letters.get(veil, caller, grant_id)
    if fmt == "html":
        page = letter_page.render_html(letter.full())
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})
    view = out(letter, letters.enterprise_key(veil, letter))
    return JSONResponse(view.model_dump(mode="json"))


@router.post("/grants/{grant_id}/letter/signature")
def sign_letter(
    grant_id: str, body: LetterSignatureIn, veil: VeilDep, caller: PrincipalDep
) -> LetterOut:
    """The provider hands in its signature of the letter; once it verifies with the key the
    letter names, the grant is in force."""
    letter = letters.sign(veil, caller, grant_id, body.signature)
    return out(letter, letters.enterprise_key(veil, letter))


@router.get("/grants/{grant_id}/evidence")
def evidence_pack(grant_id: str, veil: VeilDep, caller: PrincipalDep) -> JSONResponse:
    """The grant's evidence pack for insurers and auditors: its signed letter, a usage
    receipt and the audit range, signed; verify offline with ``veil evidence verify``.
    Enterprise (own grants), security officers (scope), operator."""
    return JSONResponse(evidence.build_pack(veil, caller, grant_id))
