"""Commitment letters in the console: the printable letter (its enterprise and its provider),
and the enterprise's form to issue one (on its grants page).  The provider signs with its
private key on its own machine (``veil letters sign``), never in the browser."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from policies.capabilities import Capability, require
from sandbox.api.deps import VeilDep
from sandbox.api.routes_receipts import PAGE_POLICY
from sandbox.console.session import PREFIX, CsrfDep, PrincipalDep
from sandbox.grants import letter_page, letters

router = APIRouter()


@router.get("/letters/{grant_id}")
def letter(grant_id: str, veil: VeilDep, principal: PrincipalDep) -> Response:
    """The grant's letter as a printable page (print it, or save it as PDF, from the
    browser); it embeds the signed JSON, so the page itself verifies offline."""
    found = letters.get(veil, principal, grant_id)
    page = letter_page.render_html(found.full())
    return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})


@router.post("/grants/{grant_id}/letter", dependencies=[CsrfDep])
def issue(
    grant_id: str,
    veil: VeilDep,
    principal: PrincipalDep,
    retention_days: Annotated[str, Form()] = "",
    insurance_reference: Annotated[str, Form()] = "",
) -> Response:
    """Issue the grant's letter (enterprise); back to the grant's card.  The role is checked
    before the form is read, so another role is refused whatever it sent."""
    require(principal, Capability.GRANT_ACCESS)
    try:
        days = int(retention_days.strip())
    except ValueError:
        days = 0  # refused below with the rule's own message
    letters.issue(veil, principal, grant_id, days, insurance_reference)
    return RedirectResponse(
        f"{PREFIX}/grants?notice=letter-issued#grant-{grant_id}", status_code=303
    )
