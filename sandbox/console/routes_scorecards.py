"""Scorecards in the console: a provider reads its own, the bureau every provider's, with
the exit proposals (read through ``sandbox.scorecards`` with the logged-in principal, as
the API does; decisions stay with the API and the CLI)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.api.deps import VeilDep
from sandbox.console.render import page
from sandbox.console.session import PrincipalDep
from sandbox.scorecards import exits, periods

router = APIRouter()


def _row(card: dict[str, Any]) -> dict[str, Any]:
    document = card["document"]
    parts = document["components"]
    return {
        "period": document["period"]["name"],
        "provider": document["provider_name"],
        "result": document["result"],
        "score": document["score"],
        "kpi": parts["kpi"],
        "ratings": parts["ratings"],
        "bureau": (parts["bureau"] or {}).get("score"),
        "assessors": parts["assessors"]["score"],
        # Each registered assessor's, by name (a card signed before migration 0022 has no
        # status: its assessors were names the bureau typed in).
        "assessments": [
            {
                "name": a.get("assessor"),
                "score": a.get("score"),
                "suspended": a.get("assessor_status") == "suspended",
            }
            for a in parts["assessors"].get("assessments", [])
        ],
        "reasons": document["reasons"],
    }


@router.get("/scorecards")
def scorecards_page(request: Request, veil: VeilDep, principal: PrincipalDep) -> Response:
    """The scorecards the caller may read, newest first, and its exit proposals."""
    cards = periods.list_scorecards(veil, principal)
    proposals = exits.list_exits(veil, principal)
    return page(
        request,
        "scorecards.html",
        principal,
        cards=[_row(c) for c in reversed(cards)],
        proposals=list(reversed(proposals)),
    )
