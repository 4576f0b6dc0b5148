"""Registered third-party assessors (docs/programme.md, "Assessors"): the bureau registers,
lists, suspends and reinstates them (``/v1/assessors``); an assessor records its own
assessments of providers in the open period and reads them (``/v1/assessments``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.routes_principals import out
from sandbox.api.schemas import NAME_LENGTH, Input, ObjectId, PrincipalOut, ReasonIn
from sandbox.scorecards import assessors

router = APIRouter(prefix="/v1", tags=["assessors"])


class AssessorIn(Input):
    name: str = Field(min_length=1, max_length=NAME_LENGTH, description="e.g. Quality Institute")


class OwnAssessmentIn(Input):
    provider_id: ObjectId
    score: float = Field(description="0-100")
    reason: str = Field(min_length=1, max_length=500)


@router.post("/assessors", status_code=status.HTTP_201_CREATED)
def register(body: AssessorIn, veil: VeilDep, caller: PrincipalDep) -> PrincipalOut:
    """Register a third-party assessor (the bureau); the operator then issues its token."""
    return out(assessors.register(veil, caller, body.name))


@router.get("/assessors")
def list_assessors(veil: VeilDep, caller: PrincipalDep) -> list[PrincipalOut]:
    """Every registered assessor, active or suspended (the bureau)."""
    return [out(a) for a in assessors.list_assessors(veil, caller)]


@router.post("/assessors/{assessor_id}/suspend")
def suspend(assessor_id: str, body: ReasonIn, veil: VeilDep, caller: PrincipalDep) -> PrincipalOut:
    """Suspend an assessor: its tokens and later assessments are refused (the bureau)."""
    return out(assessors.set_status(veil, caller, assessor_id, True, body.reason))


@router.post("/assessors/{assessor_id}/reinstate")
def reinstate(
    assessor_id: str, body: ReasonIn, veil: VeilDep, caller: PrincipalDep
) -> PrincipalOut:
    """Reinstate a suspended assessor (the bureau)."""
    return out(assessors.set_status(veil, caller, assessor_id, False, body.reason))


@router.post("/assessments", status_code=status.HTTP_201_CREATED)
def assess(body: OwnAssessmentIn, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Record your own score (0-100) of a provider in the open period (an assessor);
    recording again replaces it."""
    made = assessors.assess(veil, caller, body.provider_id, body.score, body.reason)
    return assessors.summary(made)


@router.get("/assessments")
def own_assessments(veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """The open period, and each provider being scored with your assessment of it."""
    return assessors.own_view(veil, caller)
