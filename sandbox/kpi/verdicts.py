"""Evaluating a KPI contract: one tier-3 job on the provider's grant, then a signed verdict.

An evaluation (either party asks) is a job like any other (``sandbox.jobs.submit``): the
policy decision on the provider's grant (tier 3, the KPI's columns, the contract's
purpose), the debit of the contract's ε from that grant and from the dataset's cap,
committed before any data is read, then the run in the isolated sandbox (the control
plane's worker, or the enterprise's node for a dataset it holds), which releases only
each period's DP statistics.  Once the job is released, the verdict is computed from
those statistics (post-processing: ``analytics.kpi.judge``), signed with the platform's
key and stored, in one transaction with its audit event; reading a pending verdict
settles it.  A refused evaluation is recorded failed and the refusal returned.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.kpi import PERIODS, KpiError, Statistic, judge, parse_kpi
from i18n import Msg
from keys import key_operation
from policies import audit
from policies.db import new_id
from policies.errors import Conflict, Denied, NotFound
from policies.principals import Principal, Status
from sandbox.data.datasets import schema_from_json
from sandbox.jobs.submit import JobSubmission, submit_job
from sandbox.kpi.contracts import party_contract
from sandbox.kpi.verdict_format import FORMAT, sign_verdict
from sandbox.runtime.veil import Veil
from sandbox.store.kpi_models import ContractStatus, KpiContract, KpiVerdict, VerdictStatus
from sandbox.store.models import Dataset, Job, JobStatus


def evaluate(veil: Veil, caller: Principal, contract_id: str) -> KpiVerdict:
    """Queue an evaluation of an active contract; :class:`Denied` (recorded) if refused."""
    with veil.db.transaction() as session:
        contract = party_contract(session, caller, contract_id)
        if contract.status != ContractStatus.ACTIVE:
            raise Conflict(
                Msg(
                    "KPI contract '{id}' is {status}: it is evaluated only once both parties "
                    "agreed to it (the other party accepts it first)",
                    id=contract.id,
                    status=contract.status,
                ),
                code="contract_not_active",
            )
        provider = session.get(Principal, contract.provider_id)
        assert provider is not None
        if provider.status != Status.ACTIVE:
            # Its jobs would be failed unrun (sandbox.jobs.suspension), the ε spent for nothing.
            raise Conflict(
                Msg(
                    "the provider of KPI contract '{id}' is suspended: it is evaluated again "
                    "once the provider is reinstated",
                    id=contract.id,
                ),
                code="provider_suspended",
            )
        terms = dict(contract.terms)
    submission = JobSubmission(
        dataset_id=terms["dataset_id"],
        purpose=terms["purpose"],
        query={"kpi": terms["kpi"]},
        epsilon=float(terms["epsilon"]),
    )
    try:
        job = submit_job(veil, provider, submission)
    except Denied as refused:
        _record(veil, caller, contract_id, refused.job_id, refused.reasons)
        raise
    return _record(veil, caller, contract_id, job.id, None)


def _record(
    veil: Veil,
    caller: Principal,
    contract_id: str,
    job_id: str | None,
    refused: tuple[str, ...] | None,
) -> KpiVerdict:
    with veil.db.transaction() as session:
        contract = session.get(KpiContract, contract_id)
        assert contract is not None
        verdict = KpiVerdict(
            id=new_id("vrd"),
            contract_id=contract_id,
            job_id=job_id or "",
            requested_by=caller.id,
            status=VerdictStatus.PENDING if refused is None else VerdictStatus.FAILED,
            error=None if refused is None else ("denied: " + "; ".join(refused))[:500],
            created_at=veil.clock(),
            decided_at=None if refused is None else veil.clock(),
        )
        session.add(verdict)
        audit.record(
            session,
            "kpi.evaluation_requested" if refused is None else "kpi.evaluation_denied",
            actor=caller,
            outcome=audit.Outcome.OK if refused is None else audit.Outcome.DENIED,
            tenant_id=contract.enterprise_id,
            resource=f"kpi_verdict:{verdict.id}",
            details={"contract_id": contract_id, "job_id": job_id,
                     "sha256": contract.terms_sha256, "epsilon": contract.terms["epsilon"],
                     **({"reasons": list(refused)} if refused else {})},
        )  # fmt: skip
    return verdict


def _released(job: Job) -> dict[str, list[Statistic]]:
    """Each period's statistics from the job's released result."""
    assert job.result is not None
    found: dict[str, list[Statistic]] = {period: [] for period in PERIODS}
    for row in job.result["rows"]:
        found[row["group"]["period"]] = [
            Statistic(v["aggregate"], float(v["value"]), float(v["noise_scale"]))
            for v in row["values"]
        ]
    return found


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else value  # NaN: none


def _settle(veil: Veil, session: Session, verdict: KpiVerdict) -> None:
    """Turn a pending verdict whose job ended into a signed verdict (or a failure)."""
    job = session.get(Job, verdict.job_id)
    if job is None or job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return
    contract = session.get(KpiContract, verdict.contract_id)
    assert contract is not None
    now = veil.clock()
    if job.status != JobStatus.RELEASED:
        verdict.status, verdict.decided_at = VerdictStatus.FAILED, now
        verdict.error = (job.error or "; ".join(job.reasons or []) or str(job.status))[:500]
        audit.record(session, "kpi.verdict_failed", outcome=audit.Outcome.FAILED,
                     tenant_id=contract.enterprise_id, resource=f"kpi_verdict:{verdict.id}",
                     details={"job_id": job.id, "job_status": job.status})  # fmt: skip
        return
    terms = contract.terms
    dataset = session.get(Dataset, contract.dataset_id)
    assert dataset is not None
    try:
        query = parse_kpi(terms["kpi"])
        change = judge(
            query,
            schema_from_json(dataset.declaration),
            _released(job),
            float(terms["target"]),
            float(terms["confidence"]),
        )
    except (KpiError, KeyError, TypeError, ValueError):
        verdict.status, verdict.decided_at = VerdictStatus.FAILED, now
        verdict.error = "the evaluation's release cannot be read as this KPI's statistics"
        audit.record(session, "kpi.verdict_failed", outcome=audit.Outcome.FAILED,
                     tenant_id=contract.enterprise_id, resource=f"kpi_verdict:{verdict.id}",
                     details={"job_id": job.id})  # fmt: skip
        return
    body = {
        "format": FORMAT,
        "id": verdict.id,
        "contract_id": contract.id,
        "contract_sha256": contract.terms_sha256,
        "enterprise_id": contract.enterprise_id,
        "provider_id": contract.provider_id,
        "dataset_id": contract.dataset_id,
        "dataset_version": job.dataset_version,
        "job_id": job.id,
        "job_result_sha256": job.result_sha256,
        "kpi": str(query.kpi),
        "direction": str(change.direction),
        "baseline_value": change.baseline,
        "evaluation_value": change.evaluation,
        "change": _finite(change.change),
        "interval": list(change.interval),
        "confidence": change.confidence,
        "interval_accounts_for": "dp_noise",
        "target": change.target,
        "verdict": str(change.verdict),
        "epsilon": job.cost.epsilon,
        "issued_at": now.isoformat(),
    }
    # Named in the key server's log; the key audit explains it by kpi.verdict_released.
    with key_operation(f"kpi_verdict:{verdict.id}/1"):
        document = sign_verdict(body, veil.keys.sign)
    verdict.status, verdict.verdict = VerdictStatus.RELEASED, str(change.verdict)
    verdict.document, verdict.decided_at = document, now
    audit.record(session, "kpi.verdict_released", tenant_id=contract.enterprise_id,
                 resource=f"kpi_verdict:{verdict.id}",
                 details={"contract_id": contract.id, "job_id": job.id,
                          "verdict": body["verdict"], "interval": body["interval"],
                          "key_version": document["key_version"]})  # fmt: skip


def settle_pending(veil: Veil) -> int:
    """Settle every pending evaluation whose job has ended; return how many were settled.

    Reading an evaluation settles it too; this is for whoever aggregates verdicts without
    reading each (the programme's scorecards) and for maintenance.  Each is settled in its
    own transaction, under its row lock, so a concurrent reader signs nothing twice.
    """
    with veil.db.read() as session:
        pending = list(
            session.scalars(
                select(KpiVerdict.id)
                .join(Job, Job.id == KpiVerdict.job_id)
                .where(
                    KpiVerdict.status == VerdictStatus.PENDING,
                    Job.status.not_in((JobStatus.QUEUED, JobStatus.RUNNING)),
                )
            )
        )
    settled = 0
    for verdict_id in pending:
        with veil.db.transaction() as session:
            verdict = session.get(KpiVerdict, verdict_id, with_for_update=True)
            if verdict is not None and verdict.status == VerdictStatus.PENDING:
                _settle(veil, session, verdict)
                settled += verdict.status != VerdictStatus.PENDING
    return settled


def show(veil: Veil, caller: Principal, contract_id: str, verdict_id: str) -> dict[str, Any]:
    """One verdict of a contract the caller is a party to (settled first if its job ended)."""
    with veil.db.transaction() as session:
        party_contract(session, caller, contract_id)
        verdict = session.get(KpiVerdict, verdict_id, with_for_update=True)
        if verdict is None or verdict.contract_id != contract_id:
            raise NotFound("KPI verdict", verdict_id)
        if verdict.status == VerdictStatus.PENDING:
            _settle(veil, session, verdict)
        return summary(verdict)


def list_for(veil: Veil, caller: Principal, contract_id: str) -> list[dict[str, Any]]:
    """Every evaluation of a contract the caller is a party to, oldest first (settled)."""
    with veil.db.transaction() as session:
        party_contract(session, caller, contract_id)
        found = list(
            session.scalars(
                select(KpiVerdict)
                .where(KpiVerdict.contract_id == contract_id)
                .order_by(KpiVerdict.created_at, KpiVerdict.id)
            )
        )
        for verdict in found:
            if verdict.status == VerdictStatus.PENDING:
                _settle(veil, session, verdict)
        return [summary(v) for v in found]


def summary(verdict: KpiVerdict) -> dict[str, Any]:
    """What both parties read of an evaluation: its state and, once released, the signed
    verdict document."""
    return {
        "id": verdict.id,
        "contract_id": verdict.contract_id,
        "job_id": verdict.job_id or None,
        "status": verdict.status,
        "verdict": verdict.verdict,
        "error": verdict.error,
        "requested_by": verdict.requested_by,
        "created_at": verdict.created_at.isoformat(),
        "document": verdict.document,
    }
