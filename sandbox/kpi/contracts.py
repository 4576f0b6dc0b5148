"""KPI contracts: one party proposes, the other accepts the exact terms (their SHA-256).

A contract names one dataset of the enterprise, the provider, the purpose its evaluations
are run for (one of the provider's grant on that dataset), the KPI document
(``analytics.kpi``), the target (relative improvement), the confidence level of the
verdict's interval, and the ε each evaluation costs.  It is checked against the
dataset's declaration when proposed (a secret column, a column of the wrong type: 422)
and pinned by the SHA-256 of its canonical terms; accepting names that SHA-256, so a
party consents only to the terms it read.  Every step is audited in its transaction.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from analytics.kpi import KpiError, check_terms, parse_kpi, validate_kpi
from i18n import Msg
from keys.node_auth import canonical_json
from policies import audit
from policies.budget import Budget
from policies.capabilities import Capability, may, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.grants import EPSILON_UNIT, grants_for
from policies.principals import Principal, Role
from sandbox.data.datasets import schema_from_json
from sandbox.runtime.veil import Veil
from sandbox.store.kpi_models import ContractStatus, KpiContract
from sandbox.store.models import Dataset

FORMAT: Final = "veil-kpi-contract/1"


def terms_sha256(terms: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(terms)).hexdigest()


def _parties(
    session: Session, caller: Principal, dataset_id: str, counterparty: str | None
) -> tuple[Dataset, str, str]:
    """The dataset, its enterprise and the provider, as the caller may name them."""
    dataset = session.get(Dataset, dataset_id)
    if may(caller, Capability.OWN_DATA):
        if dataset is None or dataset.enterprise_id != caller.id:
            raise NotFound("dataset", dataset_id)
        provider = session.get(Principal, counterparty) if counterparty else None
        if provider is None or provider.role != Role.PROVIDER:
            raise NotFound("provider", counterparty or "")
        return dataset, caller.id, provider.id
    # A provider: only a dataset one of its grants names (else: as if it did not exist).
    if dataset is None or not grants_for(session, caller.id, dataset_id):
        raise NotFound("dataset", dataset_id)
    if counterparty not in (None, caller.id):
        raise InvalidRequest(
            Msg(
                "a provider proposes a contract for itself: leave provider_id out (the "
                "enterprise is the dataset's owner)"
            )
        )
    return dataset, dataset.enterprise_id, caller.id


def propose(
    veil: Veil,
    caller: Principal,
    *,
    dataset_id: str,
    purpose: str,
    kpi: Any,
    target: Any,
    confidence: Any,
    epsilon: float,
    counterparty: str | None = None,
) -> KpiContract:
    """A new contract, proposed by the enterprise (naming the provider) or the provider."""
    require(caller, Capability.AGREE_KPI_CONTRACTS)
    try:
        query = parse_kpi(kpi)
        target, confidence = check_terms(target, confidence)
    except KpiError as exc:
        raise InvalidRequest(exc.args[0]) from None
    cost = Budget.from_floats(epsilon, 0.0)
    if cost.epsilon_units <= 0:
        raise InvalidRequest(Msg("a KPI evaluation needs epsilon > 0 (e.g. 1.0)"))
    with veil.db.transaction() as session:
        dataset, enterprise_id, provider_id = _parties(session, caller, dataset_id, counterparty)
        budgets = [g.epsilon_budget for g in grants_for(session, provider_id, dataset.id)]
        if budgets and cost.epsilon_units > max(budgets):
            # An evaluation is debited from the provider's grant: one that costs more than
            # the grant's whole budget could never run.
            raise InvalidRequest(
                Msg(
                    "each evaluation would cost more than the provider's grant on this dataset "
                    "allows in all (ε {budget}); ask for a smaller epsilon",
                    budget=f"{max(budgets) / EPSILON_UNIT:g}",
                )
            )
        try:
            validate_kpi(schema_from_json(dataset.declaration), query)
        except KpiError as exc:
            raise InvalidRequest(exc.args[0]) from None
        terms = {
            "format": FORMAT,
            "enterprise_id": enterprise_id,
            "provider_id": provider_id,
            "dataset_id": dataset.id,
            "purpose": purpose,
            "kpi": query.document(),
            "target": target,
            "confidence": confidence,
            "epsilon": cost.epsilon,
        }
        contract = KpiContract(
            id=new_id("kpi"),
            enterprise_id=enterprise_id,
            provider_id=provider_id,
            dataset_id=dataset.id,
            terms=terms,
            terms_sha256=terms_sha256(terms),
            status=ContractStatus.PROPOSED,
            proposed_by=caller.id,
            proposed_at=veil.clock(),
        )
        session.add(contract)
        audit.record(session, "kpi_contract.proposed", actor=caller, tenant_id=enterprise_id,
                     resource=f"kpi_contract:{contract.id}",
                     details={"sha256": contract.terms_sha256, "kpi": str(query.kpi),
                              "dataset_id": dataset.id, "provider_id": provider_id,
                              "epsilon": cost.epsilon})  # fmt: skip
    return contract


def party_contract(session: Session, caller: Principal, contract_id: str) -> KpiContract:
    """A contract the caller is a party to; anyone else's answers like a missing one."""
    require(caller, Capability.AGREE_KPI_CONTRACTS)
    contract = session.get(KpiContract, contract_id)
    if contract is None or caller.id not in (contract.enterprise_id, contract.provider_id):
        raise NotFound("KPI contract", contract_id)
    return contract


def decide(
    veil: Veil, caller: Principal, contract_id: str, sha256: str, accept: bool
) -> KpiContract:
    """Accept (the other party, naming the terms' SHA-256) or decline (either party)."""
    with veil.db.transaction() as session:
        contract = party_contract(session, caller, contract_id)
        if contract.status != ContractStatus.PROPOSED:
            raise Conflict(
                Msg(
                    "KPI contract '{id}' is already {status}: propose a new one to change it",
                    id=contract.id,
                    status=contract.status,
                )
            )
        if accept and caller.id == contract.proposed_by:
            raise Conflict(
                Msg("the other party accepts a contract, not the party that proposed it")
            )
        if accept and sha256 != contract.terms_sha256:
            raise Conflict(
                Msg(
                    "the SHA-256 given is not that of this contract's terms: read the "
                    "contract again (GET /v1/kpi-contracts/{id}) and accept what you read",
                    id=contract.id,
                ),
                code="terms_changed",
            )
        contract.status = ContractStatus.ACTIVE if accept else ContractStatus.DECLINED
        contract.decided_by, contract.decided_at = caller.id, veil.clock()
        action = "kpi_contract.accepted" if accept else "kpi_contract.declined"
        audit.record(session, action, actor=caller, tenant_id=contract.enterprise_id,
                     resource=f"kpi_contract:{contract.id}",
                     details={"sha256": contract.terms_sha256})  # fmt: skip
    return contract


def list_for(veil: Veil, caller: Principal) -> list[dict[str, Any]]:
    """The contracts the caller is a party to, newest first."""
    require(caller, Capability.AGREE_KPI_CONTRACTS)
    with veil.db.read() as session:
        found = session.scalars(
            select(KpiContract)
            .where(
                or_(KpiContract.enterprise_id == caller.id, KpiContract.provider_id == caller.id)
            )
            .order_by(KpiContract.proposed_at.desc(), KpiContract.id)
        )
        return [summary(c) for c in found]


def summary(contract: KpiContract) -> dict[str, Any]:
    """What both parties read of a contract."""
    return {
        "id": contract.id,
        "status": contract.status,
        "terms": contract.terms,
        "terms_sha256": contract.terms_sha256,
        "proposed_by": contract.proposed_by,
        "proposed_at": contract.proposed_at.isoformat(),
        "decided_by": contract.decided_by,
        "decided_at": contract.decided_at.isoformat() if contract.decided_at else None,
    }
