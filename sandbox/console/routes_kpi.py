"""KPI contracts in the console, for both parties: the terms, the consent, the verdicts.

The page lists the contracts the logged-in enterprise or provider is a party to, with
each one's terms and every evaluation's verdict and interval.  The forms call the
services ``/v1/kpi-contracts`` calls (``sandbox.kpi``): accepting names the SHA-256 of
the terms shown on the page, so a party accepts what it read; declining; asking for an
evaluation (a job that spends the contract's ε).  Proposing is done with the API or
``veil kpi propose`` (``docs/verdicts.md``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from i18n import N_
from i18n.catalog import gettext
from keys import KeysError
from policies.capabilities import Capability, require
from policies.errors import VeilError
from policies.principals import Principal
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console.render import error_text, page
from sandbox.console.session import PREFIX, CsrfDep, PrincipalDep
from sandbox.kpi import contracts, verdicts
from sandbox.runtime.veil import Veil

router = APIRouter()

KPI_PAGE: Final = f"{PREFIX}/kpi"
#: What a finished action says (fixed texts: only the choice among them is in the URL).
NOTICES: Final = {
    "accepted": N_("The contract is active: either party may now ask for an evaluation."),
    "declined": N_("The contract was declined; it will never be evaluated."),
    "evaluating": N_("The evaluation was queued; its ε is spent. Its verdict appears below."),
}


@router.get("/kpi")
def kpi_page(
    request: Request, veil: VeilDep, principal: PrincipalDep, notice: str | None = None
) -> Response:
    """The caller's KPI contracts, each with its terms, verdicts and the forms it may use."""
    text = NOTICES.get(notice or "")
    return _page(request, veil, principal, notice=gettext(text) if text else None)


@router.post("/kpi/{contract_id}/{action}", dependencies=[CsrfDep])
def kpi_action(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    contract_id: str,
    action: Literal["accept", "decline", "evaluate"],
    terms_sha256: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Accept (the SHA-256 of the terms the page showed), decline, or evaluate a contract."""
    try:
        if action == "evaluate":
            verdicts.evaluate(veil, principal, contract_id)
        else:
            contracts.decide(veil, principal, contract_id, terms_sha256, action == "accept")
    except (VeilError, KeysError) as exc:
        failed = {"contract_id": contract_id, "error": error_text(exc)}
        return _page(request, veil, principal, failed=failed, status_code=status_for(exc))
    done = {"accept": "accepted", "decline": "declined", "evaluate": "evaluating"}[action]
    return RedirectResponse(f"{KPI_PAGE}?notice={done}", status_code=303)


def _page(
    request: Request,
    veil: Veil,
    principal: Principal,
    *,
    notice: str | None = None,
    failed: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    require(principal, Capability.AGREE_KPI_CONTRACTS)
    rows = contracts.list_for(veil, principal)
    for row in rows:
        row["verdicts"] = [_verdict(v) for v in verdicts.list_for(veil, principal, row["id"])]
        row["mine_to_accept"] = row["status"] == "proposed" and row["proposed_by"] != principal.id
    return page(request, "kpi.html", principal, status_code, contracts=rows, notice=notice,
                failed=failed)  # fmt: skip


def _verdict(verdict: dict[str, Any]) -> dict[str, Any]:
    document = verdict.get("document") or {}
    low, high = document.get("interval") or [None, None]
    return {**verdict, "change": document.get("change"), "low": low, "high": high,
            "confidence": document.get("confidence")}  # fmt: skip
