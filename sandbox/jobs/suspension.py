"""Suspending a provider, and reinstating it: operators and security officers, audited.

A suspension is **one transaction**: the provider's status becomes
``suspended`` — so :func:`policies.principals.authenticate` refuses every token
it holds from the next request on — its queued jobs end as failed at once
(through :func:`sandbox.jobs.submit.cancel_queued_jobs`, like a revocation), its
running jobs are asked to stop, and ``provider.suspended`` is audited with the
reason.  Budgets: a queued job was debited when it was submitted and has read
no data; its debit stays spent all the same, exactly as when a provider cancels
its own job (the ledger only grows).  Held tier-5 outputs stay held: the
enterprise decides on them.

A job submitted while the suspension commits can still reach the queue; the
worker fails such a job instead of running it (:func:`fail_jobs_of_suspended`).

A security officer with a scope may act only on a provider that holds a grant
(in any state) from an enterprise it oversees; any other provider is
"not found", so that the answer never confirms that it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require, tenants_in_scope
from policies.errors import Conflict, NotFound
from policies.grants import Grant
from policies.principals import Principal, Role, Status
from sandbox.accounts.tenants import require_reason
from sandbox.jobs.submit import cancel_queued_jobs
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus

CANCELLED_WHY = "the provider was suspended; the job's budget stays spent"
STOP_WHY = "the provider was suspended"


@dataclass(frozen=True)
class SuspensionResult:
    """What a suspension or reinstatement did, as far as the caller may see.

    ``cancelled_job_ids`` and ``stopping_job_ids`` name only jobs on the data of
    enterprises the caller oversees (all of them for operators and unscoped officers).
    """

    provider_id: str
    name: str
    status: str
    reason: str
    at: datetime
    cancelled_job_ids: tuple[str, ...] = ()
    stopping_job_ids: tuple[str, ...] = ()


def suspend_provider(
    veil: Veil, caller: Principal, provider_id: str, reason: str | None
) -> SuspensionResult:
    """Suspend ``provider_id``: tokens refused, queued jobs cancelled, running ones stopped."""
    require(caller, Capability.SUSPEND_PROVIDER)
    why = require_reason(reason)
    now = veil.clock()
    with veil.db.transaction() as session:
        provider, tenants = _provider_in_scope(session, caller, provider_id)
        if provider.status == Status.SUSPENDED:
            raise Conflict(
                Msg(
                    "provider '{provider_id}' is suspended already; reinstate it to restore access",
                    provider_id=provider_id,
                )
            )
        cancelled, stopping = suspend_locked(session, caller, provider, tenants, why, now)
        return SuspensionResult(
            provider.id,
            provider.name,
            provider.status,
            why,
            now,
            tuple(_visible_ids(cancelled, caller)),
            tuple(_visible_ids(stopping, caller)),
        )


def suspend_locked(
    session: Session,
    caller: Principal,
    provider: Principal,
    tenants: list[str],
    why: str,
    now: datetime,
) -> tuple[list[Job], list[Job]]:
    """Suspend ``provider`` (locked, active) in ``session``, audited for each of
    ``tenants``: its queued jobs cancelled and its running ones asked to stop (returned).
    A confirmed exit (``sandbox.scorecards.exits``) suspends through this too."""
    provider.status = Status.SUSPENDED
    cancelled = _jobs(
        session,
        cancel_queued_jobs(
            session, provider_ids=[provider.id], why=CANCELLED_WHY, now=now, actor=caller
        ),
    )
    stopping = _stop_running(session, caller, provider.id)
    for tenant_id in _tenants_or_platform(tenants):
        audit.record(
            session,
            "provider.suspended",
            actor=caller,
            tenant_id=tenant_id,
            resource=f"principal:{provider.id}",
            details={
                "reason": why,
                "cancelled_job_ids": _ids_of(cancelled, tenant_id),
                "stopping_job_ids": _ids_of(stopping, tenant_id),
            },
        )
    return cancelled, stopping


def reinstate_provider(
    veil: Veil, caller: Principal, provider_id: str, reason: str | None
) -> SuspensionResult:
    """Let a suspended provider's tokens work again; jobs cancelled by the suspension stay so."""
    require(caller, Capability.SUSPEND_PROVIDER)
    why = require_reason(reason)
    now = veil.clock()
    with veil.db.transaction() as session:
        provider, tenants = _provider_in_scope(session, caller, provider_id)
        if provider.status == Status.ACTIVE:
            raise Conflict(
                Msg(
                    "provider '{provider_id}' is active; only a suspended one is reinstated",
                    provider_id=provider_id,
                )
            )
        provider.status = Status.ACTIVE
        for tenant_id in _tenants_or_platform(tenants):
            audit.record(
                session,
                "provider.reinstated",
                actor=caller,
                tenant_id=tenant_id,
                resource=f"principal:{provider.id}",
                details={"reason": why},
            )
        return SuspensionResult(provider.id, provider.name, provider.status, why, now)


def fail_jobs_of_suspended(session: Session, now: datetime) -> list[str]:
    """End the queued jobs of suspended providers as failed (audited); return their ids.

    A suspension cancels the queue at once, but a submission authenticated just
    before it can commit its job just after; the worker calls this before it
    claims, so such a job never runs.
    """
    provider_ids = list(
        session.scalars(
            select(Job.provider_id)
            .join(Principal, Principal.id == Job.provider_id)
            .where(Job.status == JobStatus.QUEUED, Principal.status != Status.ACTIVE)
            .distinct()
        )
    )
    if not provider_ids:
        return []
    return cancel_queued_jobs(session, provider_ids=provider_ids, why=CANCELLED_WHY, now=now)


def _provider_in_scope(
    session: Session, caller: Principal, provider_id: str
) -> tuple[Principal, list[str]]:
    """The provider (locked) and the enterprises that granted it anything, or NotFound."""
    provider = session.get(Principal, provider_id, with_for_update=True)
    if provider is None or provider.role != Role.PROVIDER:
        raise NotFound("provider", provider_id)
    tenants = sorted(
        set(session.scalars(select(Grant.enterprise_id).where(Grant.provider_id == provider.id)))
    )
    if not tenants_in_scope(caller).reaches_any(tenants):
        raise NotFound("provider", provider_id)  # outside the officer's tenants: never confirm
    return provider, tenants


def _tenants_or_platform(tenants: list[str]) -> list[str | None]:
    """Where events go: each enterprise that granted the provider anything, else none."""
    return list(tenants) if tenants else [None]


def _jobs(session: Session, job_ids: list[str]) -> list[Job]:
    return [job for job in (session.get(Job, i) for i in job_ids) if job is not None]


def _stop_running(session: Session, caller: Principal, provider_id: str) -> list[Job]:
    """Ask the provider's running jobs to stop, as its own cancel request would (audited)."""
    running = list(
        session.scalars(
            select(Job).where(Job.provider_id == provider_id, Job.status == JobStatus.RUNNING)
        )
    )
    for job in running:
        job.cancel_requested = True
        audit.record(
            session,
            "job.cancel_requested",
            actor=caller,
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={"reason": STOP_WHY},
        )
    return running


def _ids_of(jobs: list[Job], tenant_id: str | None) -> list[str]:
    return [job.id for job in jobs if tenant_id is None or job.enterprise_id == tenant_id]


def _visible_ids(jobs: list[Job], caller: Principal) -> list[str]:
    scope = tenants_in_scope(caller)
    return [job.id for job in jobs if job.enterprise_id in scope]
