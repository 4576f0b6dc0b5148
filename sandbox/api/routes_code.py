"""Tier 5: code requests (submit, list, show, approve, deny) and held outputs (release, reject)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from policies.capabilities import Capability, require
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.routes_jobs import job_out
from sandbox.api.schemas import CodeIn, CodeOut, HeldOut, JobOut, ReasonIn
from sandbox.jobs import outcomes, reviewed_code
from sandbox.store.models import CodeRequest

router = APIRouter(prefix="/v1", tags=["reviewed code"])


def code_out(code: CodeRequest) -> CodeOut:
    return CodeOut.model_validate(code, from_attributes=True)


@router.post("/code-requests", status_code=status.HTTP_201_CREATED)
def submit_code(body: CodeIn, veil: VeilDep, caller: PrincipalDep) -> CodeOut:
    """Submit a syft function (provider).  It is parsed (not run), its columns are checked
    against your tier-5 grant, and it is run on the mock in a sandbox for the reviewer;
    it then waits for the enterprise's approval."""
    return code_out(
        reviewed_code.submit_code(veil, caller, body.dataset_id, body.purpose, body.source)
    )


@router.get("/code-requests")
def list_code(
    veil: VeilDep,
    caller: PrincipalDep,
    status: Annotated[str | None, Query(description="pending, approved or denied")] = None,
) -> list[CodeOut]:
    """A provider's own code requests, or those on an enterprise's data; newest first."""
    return [code_out(c) for c in reviewed_code.list_code(veil, caller, status)]


@router.get("/code-requests/{code_id}")
def get_code(code_id: str, veil: VeilDep, caller: PrincipalDep) -> CodeOut:
    """The code, the columns it reads, its output on the mock, and the review."""
    require(caller, Capability.READ_CODE)
    with veil.db.transaction() as session:
        return code_out(reviewed_code.visible_code(session, caller, code_id))


@router.post("/code-requests/{code_id}/approve")
def approve_code(code_id: str, body: ReasonIn, veil: VeilDep, caller: PrincipalDep) -> CodeOut:
    """Approve this exact source (its SHA-256 is pinned) — enterprise, with a reason."""
    return code_out(reviewed_code.review_code(veil, caller, code_id, True, body.reason))


@router.post("/code-requests/{code_id}/deny")
def deny_code(code_id: str, body: ReasonIn, veil: VeilDep, caller: PrincipalDep) -> CodeOut:
    """Deny it, with a reason: it never runs on the data."""
    return code_out(reviewed_code.review_code(veil, caller, code_id, False, body.reason))


@router.get("/jobs/{job_id}/held")
def held_output(job_id: str, veil: VeilDep, caller: PrincipalDep) -> HeldOut:
    """A tier-5 output the checks held, for the enterprise to look at before deciding."""
    require(caller, Capability.REVIEW_CODE)
    return HeldOut(**reviewed_code.held_output(veil, caller, job_id))


@router.post("/jobs/{job_id}/release")
def release_held(job_id: str, body: ReasonIn, veil: VeilDep, caller: PrincipalDep) -> JobOut:
    """Release a held tier-5 output by hand (enterprise, with a reason; audited)."""
    return job_out(outcomes.decide_held(veil, caller, job_id, True, body.reason), caller)


@router.post("/jobs/{job_id}/reject")
def reject_held(job_id: str, body: ReasonIn, veil: VeilDep, caller: PrincipalDep) -> JobOut:
    """Reject a held tier-5 output (enterprise, with a reason; audited): never released."""
    return job_out(outcomes.decide_held(veil, caller, job_id, False, body.reason), caller)
