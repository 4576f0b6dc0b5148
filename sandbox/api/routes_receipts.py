"""Usage receipts: a signed account of one provider's use of an enterprise's data."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import OptionalTime
from sandbox.oversight import receipts

router = APIRouter(prefix="/v1", tags=["receipts"])

#: The page needs nothing from anywhere: no scripts, no fetches, only its inline style.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@router.get("/receipts", response_model=None)
def usage_receipt(
    veil: VeilDep,
    caller: PrincipalDep,
    provider_id: str,
    since: OptionalTime = None,
    until: OptionalTime = None,
    enterprise_id: str | None = None,
    fmt: Annotated[Literal["json", "html"], Query(alias="format")] = "json",
) -> Response:
    """A signed receipt of ``provider_id``'s jobs, budget use, releases and the approvals
    given in ``[since, until)`` (default: the last 30 days); JSON, or ``format=html``.

    Enterprises ask about their own data; operators and security officers (within their
    scope) name ``enterprise_id``.  Verify offline: ``veil receipts verify``."""
    receipt = receipts.build_receipt(veil, caller, provider_id, since, until, enterprise_id)
    if fmt == "html":
        page = receipts.render_html(receipt)
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})
    return JSONResponse(receipt)
