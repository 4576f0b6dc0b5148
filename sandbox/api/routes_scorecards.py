"""Providers' scorecards and exit (docs/programme.md, "Scorecards and exit").

The bureau opens and closes evaluation periods (``/v1/programme/periods``), records its
own assessments (registered assessors record theirs: ``routes_assessors``); enterprises
rate providers they granted; closing a period signs every provider's scorecard
(``/v1/scorecards``: a provider reads its own, the bureau all); two failures in a row
propose an exit, which the bureau confirms or rejects (``/v1/exits``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import Input, ObjectId
from sandbox.scorecards import exits, periods
from sandbox.store.scorecard_models import EvaluationPeriod, ExitProposal

router = APIRouter(prefix="/v1", tags=["scorecards"])


class PeriodIn(Input):
    name: str = Field(min_length=1, max_length=80, description="e.g. 2026-Q4")
    weights: dict[str, float] | None = Field(
        default=None,
        description='Each component\'s weight: {"kpi", "ratings", "bureau", "assessors"} '
        "(default 0.4, 0.2, 0.2, 0.2)",
    )
    pass_mark: float | None = Field(default=None, description="0-100 (default 60)")


class AssessmentIn(Input):
    provider_id: ObjectId
    score: float = Field(description="0-100")
    reason: str = Field(min_length=1, max_length=500)
    assessor: str | None = Field(
        default=None,
        max_length=80,
        description="No longer accepted (422): registered assessors record their own "
        "assessments (POST /v1/assessments); leave it out to record the bureau's own",
    )


class RatingIn(Input):
    provider_id: ObjectId
    rating: int = Field(description="1-5")


class ExitDecisionIn(Input):
    decision: Literal["confirm", "reject"]
    reason: str = Field(min_length=1, max_length=500)


def _period(period: EvaluationPeriod) -> dict[str, Any]:
    return {
        "id": period.id,
        "name": period.name,
        "status": period.status,
        "weights": period.weights,
        "pass_mark": period.pass_mark,
        "opened_at": period.opened_at.isoformat(),
        "closed_at": period.closed_at.isoformat() if period.closed_at else None,
    }


def _exit(proposal: ExitProposal) -> dict[str, Any]:
    return {
        "id": proposal.id,
        "provider_id": proposal.provider_id,
        "period_id": proposal.period_id,
        "scorecard_ids": proposal.scorecard_ids,
        "status": proposal.status,
        "created_at": proposal.created_at.isoformat(),
        "decided_at": proposal.decided_at.isoformat() if proposal.decided_at else None,
        "reason": proposal.reason,
        "effects": proposal.effects,
    }


@router.post("/programme/periods", status_code=status.HTTP_201_CREATED)
def open_period(body: PeriodIn, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Open an evaluation period with its weights and pass mark (the bureau)."""
    made = periods.open_period(veil, caller, body.name, body.weights, body.pass_mark)
    return _period(made)


@router.get("/programme/periods")
def list_periods(veil: VeilDep, caller: PrincipalDep) -> list[dict[str, Any]]:
    """Every evaluation period, oldest first (the bureau)."""
    return [_period(p) for p in periods.list_periods(veil, caller)]


@router.post("/programme/periods/{period_id}/close")
def close_period(period_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Close the open period: every provider's signed scorecard, and exit proposals."""
    cards = periods.close_period(veil, caller, period_id)
    return {"period_id": period_id, "scorecards": [periods.summary(c) for c in cards]}


@router.post("/programme/assessments", status_code=status.HTTP_201_CREATED)
def assess(body: AssessmentIn, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Record the bureau's own score (0-100) of a provider in the open period."""
    made = periods.assess(veil, caller, body.provider_id, body.score, body.reason, body.assessor)
    return {"id": made.id, "period_id": made.period_id, "provider_id": made.provider_id,
            "assessor": made.assessor, "score": made.score, "reason": made.reason}  # fmt: skip


@router.post("/programme/ratings")
def rate(body: RatingIn, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Rate (1-5) a provider you granted, in the open period; rating again replaces it."""
    made = periods.rate(veil, caller, body.provider_id, body.rating)
    return {"period_id": made.period_id, "provider_id": made.provider_id, "rating": made.rating}


@router.get("/scorecards")
def list_scorecards(
    veil: VeilDep, caller: PrincipalDep, period_id: str | None = None
) -> list[dict[str, Any]]:
    """Your scorecards (a provider), or every provider's (the bureau)."""
    return periods.list_scorecards(veil, caller, period_id)


@router.get("/scorecards/{scorecard_id}")
def get_scorecard(scorecard_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """One scorecard with its signed document (another provider's: not found)."""
    return periods.get_scorecard(veil, caller, scorecard_id)


@router.get("/exits")
def list_exits(veil: VeilDep, caller: PrincipalDep) -> list[dict[str, Any]]:
    """Exit proposals: every one (the bureau), or your own (a provider)."""
    return [_exit(e) for e in exits.list_exits(veil, caller)]


@router.get("/exits/providers")
def standing(veil: VeilDep, caller: PrincipalDep) -> list[dict[str, Any]]:
    """Suspended and exited providers, and why (the bureau)."""
    return exits.standing(veil, caller)


@router.post("/exits/{exit_id}/decide")
def decide(
    exit_id: str, body: ExitDecisionIn, veil: VeilDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Confirm (grants revoked, jobs cancelled, outputs shredded, provider suspended) or
    reject an exit proposal (the bureau)."""
    made = exits.decide(veil, caller, exit_id, body.decision == "confirm", body.reason)
    return _exit(made)
