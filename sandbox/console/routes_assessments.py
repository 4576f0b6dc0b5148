"""An assessor's console page: the providers being scored in the open period, its own
assessment of each, and the form that records one (through ``sandbox.scorecards.assessors``
with the logged-in principal, as ``POST /v1/assessments`` does)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from i18n import Msg
from keys import KeysError
from policies.errors import InvalidRequest, VeilError
from policies.principals import Principal
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console.render import error_text, page
from sandbox.console.session import PREFIX, CsrfDep, PrincipalDep
from sandbox.runtime.veil import Veil
from sandbox.scorecards import assessors

router = APIRouter()

ASSESSMENTS: Final = f"{PREFIX}/assessments"


@router.get("/assessments")
def assessments_page(
    request: Request, veil: VeilDep, principal: PrincipalDep, recorded: str | None = None
) -> Response:
    """The open period's providers, each with the caller's assessment and its form."""
    return _page(request, veil, principal, recorded=recorded == "1")


@router.post("/assessments", dependencies=[CsrfDep])
def record(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    provider_id: Annotated[str, Form(max_length=40)] = "",
    score: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Record (or replace) the caller's assessment of a provider in the open period."""
    try:
        assessors.assess(veil, principal, provider_id, _score(score), reason)
    except (VeilError, KeysError) as exc:
        failed = {"provider_id": provider_id, "score": score, "reason": reason,
                  "error": error_text(exc)}  # fmt: skip
        return _page(request, veil, principal, failed=failed, status_code=status_for(exc))
    return RedirectResponse(f"{ASSESSMENTS}?recorded=1", status_code=303)


def _score(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest(Msg("an assessment's score is a number from 0 to 100")) from None


def _page(
    request: Request,
    veil: Veil,
    principal: Principal,
    *,
    recorded: bool = False,
    failed: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    view = assessors.own_view(veil, principal)  # refuses every role but the assessor's
    return page(request, "assessments.html", principal, status_code, period=view["period"],
                providers=view["providers"], recorded=recorded, failed=failed)  # fmt: skip
