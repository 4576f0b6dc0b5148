"""Two failed scorecards in a row propose a provider's exit; the bureau decides.

A proposal is made when a period's scorecard fails and the provider's scorecard of the
period before (the last closed one) failed too, unless that earlier failure already made
a proposal: one proposal for each two failures in a row; a pass, or a period with
nothing to score, in between starts over.  Rejecting changes nothing.  Confirming, in
one transaction, audited:

1. revokes every grant of the provider (``policies.grants.revoke_grant``, audited
   ``grant.revoked`` for each enterprise, as the enterprise's own revocation is) and
   cancels the grants' queued jobs;
2. suspends the provider (``sandbox.jobs.suspension.suspend_locked``): its tokens are
   refused, any other queued job cancelled, running jobs asked to stop;
3. shreds what its jobs derived from enterprises' data: the released result content, a
   node's signed release, and model or held artifacts with their wrapped keys (the
   encrypted objects are deleted once the transaction committed; without their wrapped
   keys they could not be read anyway).  The result's SHA-256 stays, for receipts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, may, require
from policies.db import new_id
from policies.errors import Conflict, NotFound
from policies.grants import Grant, revoke_grant
from policies.principals import Principal, Role, Status
from sandbox.accounts.tenants import require_reason
from sandbox.jobs.held_outputs import delete_held
from sandbox.jobs.submit import cancel_queued_jobs
from sandbox.jobs.suspension import suspend_locked
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus
from sandbox.store.scorecard_models import (
    EvaluationPeriod,
    ExitProposal,
    ExitStatus,
    PeriodStatus,
    Scorecard,
)

REVOKED_WHY = "the provider's exit from the programme was confirmed"


def exited_ids(session: Session) -> list[str]:
    """The providers whose exit was confirmed."""
    return list(
        session.scalars(
            select(ExitProposal.provider_id).where(ExitProposal.status == ExitStatus.CONFIRMED)
        )
    )


def propose_if_failing(
    session: Session, caller: Principal, provider_id: str, period: EvaluationPeriod, now: datetime
) -> ExitProposal | None:
    """Propose ``provider_id``'s exit if its scorecards of ``period`` and of the closed
    period before it both failed, and the earlier one did not make a proposal already."""
    current = _card(session, period.id, provider_id)
    if current is None or current.passed is not False:
        return None
    before = session.scalars(
        select(EvaluationPeriod)
        .where(
            EvaluationPeriod.status == PeriodStatus.CLOSED,
            EvaluationPeriod.id != period.id,
            EvaluationPeriod.opened_at < period.opened_at,
        )
        .order_by(EvaluationPeriod.opened_at.desc())
    ).first()
    if before is None:
        return None
    earlier = _card(session, before.id, provider_id)
    if earlier is None or earlier.passed is not False:
        return None
    already = session.scalar(
        select(ExitProposal.id).where(
            ExitProposal.provider_id == provider_id,
            or_(ExitProposal.period_id == before.id, ExitProposal.status == ExitStatus.PROPOSED),
        )
    )
    if already is not None:
        return None
    proposal = ExitProposal(id=new_id("exi"), provider_id=provider_id, period_id=period.id,
                            scorecard_ids=[earlier.id, current.id], status=ExitStatus.PROPOSED,
                            created_at=now)  # fmt: skip
    session.add(proposal)
    audit.record(session, "scorecards.exit_proposed", actor=caller,
                 resource=f"exit:{proposal.id}",
                 details={"provider_id": provider_id,
                          "scorecard_ids": proposal.scorecard_ids})  # fmt: skip
    return proposal


def _card(session: Session, period_id: str, provider_id: str) -> Scorecard | None:
    return session.scalars(
        select(Scorecard).where(
            Scorecard.period_id == period_id, Scorecard.provider_id == provider_id
        )
    ).first()


def sees_all(caller: Principal) -> bool:
    """Whether ``caller`` reads every scorecard and proposal (the bureau) or only its own
    (a provider); anyone else is refused."""
    require(caller, Capability.READ_SCORECARDS)
    return may(caller, Capability.RUN_SCORECARDS)


def list_exits(veil: Veil, caller: Principal, status: str | None = None) -> list[ExitProposal]:
    """The bureau's: every exit proposal (or those of ``status``); a provider's: its own."""
    query = select(ExitProposal).order_by(ExitProposal.created_at)
    if status is not None:
        query = query.where(ExitProposal.status == status)
    if not sees_all(caller):
        query = query.where(ExitProposal.provider_id == caller.id)
    with veil.db.read() as session:
        return list(session.scalars(query))


def decide(
    veil: Veil, caller: Principal, exit_id: str, confirm: bool, reason: str | None
) -> ExitProposal:
    """The bureau confirms (the provider leaves, see the module) or rejects a proposal."""
    require(caller, Capability.RUN_SCORECARDS)
    why = require_reason(reason)
    now = veil.clock()
    shredded_paths: list[str] = []
    with veil.db.transaction() as session:
        proposal = session.get(ExitProposal, exit_id, with_for_update=True)
        if proposal is None:
            raise NotFound("exit proposal", exit_id)
        if proposal.status != ExitStatus.PROPOSED:
            raise Conflict(Msg("this exit proposal was decided already"))
        proposal.decided_by, proposal.decided_at, proposal.reason = caller.id, now, why
        if not confirm:
            proposal.status = ExitStatus.REJECTED
            audit.record(session, "scorecards.exit_rejected", actor=caller,
                         resource=f"exit:{proposal.id}",
                         details={"provider_id": proposal.provider_id, "reason": why})  # fmt: skip
            return proposal
        provider = session.get(Principal, proposal.provider_id, with_for_update=True)
        assert provider is not None and provider.role == Role.PROVIDER
        effects, shredded_paths = _exit(session, caller, provider, why, now)
        proposal.status, proposal.effects = ExitStatus.CONFIRMED, effects
        audit.record(session, "scorecards.exit_confirmed", actor=caller,
                     resource=f"exit:{proposal.id}",
                     details={"provider_id": provider.id, "reason": why, **effects})  # fmt: skip
    for path in shredded_paths:  # after the commit: the wrapped keys are gone already
        delete_held(veil, path)
    return proposal


def _exit(
    session: Session, caller: Principal, provider: Principal, why: str, now: datetime
) -> tuple[dict[str, Any], list[str]]:
    grants = list(session.scalars(select(Grant).where(Grant.provider_id == provider.id)))
    revoked = []
    for grant in grants:
        if grant.revoked_at is None:
            revoke_grant(session, grant)
            revoked.append(grant.id)
            audit.record(session, "grant.revoked", actor=caller, tenant_id=grant.enterprise_id,
                         resource=f"grant:{grant.id}",
                         details={"provider_id": provider.id, "reason": REVOKED_WHY})  # fmt: skip
    cancelled = cancel_queued_jobs(session, grant_ids=revoked, why=REVOKED_WHY, now=now,
                                   actor=caller) if revoked else []  # fmt: skip
    tenants = sorted({g.enterprise_id for g in grants})
    if provider.status == Status.SUSPENDED:
        cancelled += cancel_queued_jobs(session, provider_ids=[provider.id], why=REVOKED_WHY,
                                        now=now, actor=caller)  # fmt: skip
    else:
        more, _running = suspend_locked(session, caller, provider, tenants, why, now)
        cancelled += [job.id for job in more]
    shredded, paths = _shred(session, caller, provider.id, now)
    return {"revoked_grant_ids": revoked, "cancelled_job_ids": cancelled,
            "shredded_job_ids": shredded}, paths  # fmt: skip


def _shred(
    session: Session, caller: Principal, provider_id: str, now: datetime
) -> tuple[list[str], list[str]]:
    """Clear every derived output of the provider's jobs (audited for each enterprise)."""
    # Filtered here, not in SQL: a JSON column's None may be stored as JSON null.
    jobs = [
        job
        for job in session.scalars(select(Job).where(Job.provider_id == provider_id))
        if job.result is not None or job.artifact_path or job.node_release is not None
    ]
    paths = [job.artifact_path for job in jobs if job.artifact_path]
    for job in jobs:
        job.result = job.node_release = None
        job.artifact_path = job.artifact_wrapped_key = job.artifact_sha256 = None
        if job.status == JobStatus.HELD:  # nothing left for the enterprise to release
            job.status, job.finished_at = JobStatus.FAILED, now
            job.error = f"the held output was shredded: {REVOKED_WHY}"
    for tenant_id in sorted({j.enterprise_id for j in jobs if j.enterprise_id}):
        audit.record(session, "job.outputs_shredded", actor=caller, tenant_id=tenant_id,
                     resource=f"principal:{provider_id}",
                     details={"job_ids": _ids(j for j in jobs if j.enterprise_id == tenant_id),
                              "reason": REVOKED_WHY})  # fmt: skip
    return _ids(jobs), paths


def _ids(jobs: Iterable[Job]) -> list[str]:
    return sorted(job.id for job in jobs)


def standing(veil: Veil, caller: Principal) -> list[dict[str, Any]]:
    """The bureau's list of suspended and exited providers, and why."""
    require(caller, Capability.RUN_SCORECARDS)
    with veil.db.read() as session:
        confirmed = {
            p.provider_id: p
            for p in session.scalars(
                select(ExitProposal).where(ExitProposal.status == ExitStatus.CONFIRMED)
            )
        }
        found = []
        for provider in session.scalars(
            select(Principal)
            .where(Principal.role == Role.PROVIDER, Principal.status != Status.ACTIVE)
            .order_by(Principal.created_at)
        ):
            exited = confirmed.get(provider.id)
            found.append({
                "provider_id": provider.id,
                "name": provider.name,
                "status": "exited" if exited else str(provider.status),
                "reason": exited.reason if exited else _suspension_reason(session, provider.id),
                "exit_id": exited.id if exited else None,
                "at": (exited.decided_at.isoformat() if exited and exited.decided_at else None),
            })  # fmt: skip
        return found


def _suspension_reason(session: Session, provider_id: str) -> str | None:
    """The reason of the provider's last suspension, from the audit log."""
    event = session.scalars(
        select(audit.AuditEvent)
        .where(
            audit.AuditEvent.action == "provider.suspended",
            audit.AuditEvent.resource == f"principal:{provider_id}",
        )
        .order_by(audit.AuditEvent.seq.desc())
    ).first()
    return None if event is None else str((event.details or {}).get("reason") or "")
