"""KPI contracts and their verdicts (``/v1/kpi-contracts``): pay for results.

One party proposes a contract (a KPI over declared columns of one of the enterprise's
datasets, two periods, a target, the ε each evaluation costs), the other accepts the
terms it read (their SHA-256); either asks for an evaluation, which runs as a tier-3 job
on the provider's grant, and both read the signed verdict.  ``docs/verdicts.md``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import ID_LENGTH, Input, ObjectId, Purpose
from sandbox.kpi import contracts, verdicts

router = APIRouter(prefix="/v1", tags=["kpi contracts"])


class KpiContractIn(Input):
    dataset_id: ObjectId
    purpose: Purpose
    provider_id: str | None = Field(
        default=None,
        max_length=ID_LENGTH,
        description="The provider (an enterprise proposing names it; a provider leaves it out)",
    )
    kpi: dict[str, Any] = Field(
        description='{"kpi": "oee"|"scrap_rate"|"energy_per_unit"|"lead_time", "columns": '
        '{role: column}, "time_column": ..., "baseline": {"from": t0, "to": t1}, '
        '"evaluation": {"from": t2, "to": t3}} (docs/verdicts.md)'
    )
    target: float = Field(description="The relative improvement wanted, e.g. 0.05 for 5%")
    confidence: float = Field(default=0.95, description="The verdict interval's level")
    epsilon: float = Field(gt=0, description="The ε each evaluation costs")


class DecisionIn(Input):
    terms_sha256: str = Field(
        default="",
        max_length=64,
        description="Accepting: the SHA-256 of the terms you read (GET the contract)",
    )


@router.post("/kpi-contracts", status_code=status.HTTP_201_CREATED)
def propose(body: KpiContractIn, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Propose a KPI contract (enterprise or provider); the other party accepts it."""
    made = contracts.propose(
        veil, caller, dataset_id=body.dataset_id, purpose=body.purpose, kpi=body.kpi,
        target=body.target, confidence=body.confidence, epsilon=body.epsilon,
        counterparty=body.provider_id,
    )  # fmt: skip
    return contracts.summary(made)


@router.get("/kpi-contracts")
def list_contracts(veil: VeilDep, caller: PrincipalDep) -> list[dict[str, Any]]:
    """The contracts you are a party to, newest first."""
    return contracts.list_for(veil, caller)


@router.get("/kpi-contracts/{contract_id}")
def get_contract(contract_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    with veil.db.read() as session:
        return contracts.summary(contracts.party_contract(session, caller, contract_id))


@router.post("/kpi-contracts/{contract_id}/accept")
def accept(
    contract_id: str, body: DecisionIn, veil: VeilDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Accept the terms whose SHA-256 you name (the party that did not propose)."""
    return contracts.summary(contracts.decide(veil, caller, contract_id, body.terms_sha256, True))


@router.post("/kpi-contracts/{contract_id}/decline")
def decline(contract_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Decline (the other party) or withdraw (the proposer) a proposed contract."""
    return contracts.summary(contracts.decide(veil, caller, contract_id, "", False))


@router.post("/kpi-contracts/{contract_id}/evaluations", status_code=status.HTTP_202_ACCEPTED)
def evaluate(contract_id: str, veil: VeilDep, caller: PrincipalDep) -> dict[str, Any]:
    """Evaluate an active contract: a tier-3 job that debits the contract's ε from the
    provider's grant before any data is read (403 with reasons when refused)."""
    return verdicts.summary(verdicts.evaluate(veil, caller, contract_id))


@router.get("/kpi-contracts/{contract_id}/verdicts")
def list_verdicts(contract_id: str, veil: VeilDep, caller: PrincipalDep) -> list[dict[str, Any]]:
    """Every evaluation of the contract, with its signed verdict once released."""
    return verdicts.list_for(veil, caller, contract_id)


@router.get("/kpi-contracts/{contract_id}/verdicts/{verdict_id}")
def get_verdict(
    contract_id: str, verdict_id: str, veil: VeilDep, caller: PrincipalDep
) -> dict[str, Any]:
    """One evaluation: pending, failed (why), or released with its signed verdict."""
    return verdicts.show(veil, caller, contract_id, verdict_id)
