"""Security officers' attention views, and suspending or reinstating a provider."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import Input, OptionalTime
from sandbox.jobs import suspension
from sandbox.oversight import attention

router = APIRouter(prefix="/v1", tags=["oversight"])


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ReasonCountOut(_Out):
    reason: str
    count: int


class ProviderDenialsOut(_Out):
    provider_id: str
    provider_name: str
    count: int
    last_at: datetime
    reasons: list[ReasonCountOut]


class GrantBurnOut(_Out):
    grant_id: str
    provider_id: str
    provider_name: str
    enterprise_id: str
    enterprise_name: str
    dataset_ids: list[str]
    epsilon_budget: float
    epsilon_spent: float
    fraction_used: float
    epsilon_spent_in_period: float
    jobs_in_period: int
    active: bool


class HeldOutputOut(_Out):
    job_id: str
    provider_id: str
    enterprise_id: str | None
    held_since: datetime
    reasons: list[str]


class FailedLoginsOut(_Out):
    client: str | None
    count: int
    last_at: datetime
    paths: list[str]


class AttentionOut(_Out):
    since: datetime
    until: datetime
    scope: list[str] | None
    denied_by_provider: list[ProviderDenialsOut]
    budget_burn: list[GrantBurnOut]
    held_outputs: list[HeldOutputOut]
    failed_logins: list[FailedLoginsOut]
    failed_logins_included: bool = Field(
        description="False for a scoped officer: failed logins belong to no tenant"
    )


class SuspensionIn(Input):
    reason: str = Field(description="Why (1-500 characters); goes into the audit log")


class SuspensionOut(_Out):
    provider_id: str
    name: str
    status: str
    reason: str
    at: datetime
    cancelled_job_ids: list[str]
    stopping_job_ids: list[str]


@router.get("/audit/attention")
def get_attention(
    veil: VeilDep,
    caller: PrincipalDep,
    since: Annotated[OptionalTime, Query(description="ISO 8601 with zone; default 7 days")] = None,
) -> AttentionOut:
    """Denied attempts per provider, budget burn per grant, held outputs, failed logins."""
    return AttentionOut.model_validate(attention.attention(veil, caller, since))


@router.post("/providers/{provider_id}/suspend")
def suspend_provider(
    provider_id: str, body: SuspensionIn, veil: VeilDep, caller: PrincipalDep
) -> SuspensionOut:
    """Suspend a provider: its tokens stop working, its queued jobs are cancelled (audited)."""
    result = suspension.suspend_provider(veil, caller, provider_id, body.reason)
    return SuspensionOut.model_validate(result)


@router.post("/providers/{provider_id}/reinstate")
def reinstate_provider(
    provider_id: str, body: SuspensionIn, veil: VeilDep, caller: PrincipalDep
) -> SuspensionOut:
    """Reinstate a suspended provider; jobs cancelled by the suspension stay cancelled."""
    result = suspension.reinstate_provider(veil, caller, provider_id, body.reason)
    return SuspensionOut.model_validate(result)
