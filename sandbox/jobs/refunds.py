"""Refunds: a job that failed before any of its data was read gets its debit back.

**Where "its data was read" begins.**  At the moment the key server has handed back the
data key of the job's dataset version, before the first byte of plaintext exists
(``KeyService.decrypt_stream`` calls ``on_unwrapped`` there).  At that one point
:func:`data_read_marker` records ``Job.data_read_at``, in a transaction of its own and only
while the job still runs under this worker's claim; decryption goes on only once that has
committed.  Hence:

- a job whose ``data_read_at`` is unset produced no plaintext, under any worker: not the one
  failing it now, not an earlier one that died, and not one taken for dead that still runs
  (its claim is gone, so it cannot record the mark, so it decrypts nothing: :class:`ClaimLost`);
- once set, the mark is never cleared, so that job's debit is never given back.

Nothing is inferred from the kind of error: the key server being down, an internal error
before the read, or workers dying twice before it all leave the mark unset, and a
damaged object, a sandbox failure or a key-server loss while storing a tier-4 model all
come after it.

**When.**  Only for failures the provider did not ask for (an infrastructure failure: the
key server unavailable, an internal error, workers that died), in the transaction that ends
the job failed, while it still runs under the claim of whoever ends it
(:func:`fail_with_refund`; ``sandbox.jobs.outcomes.fail_running``, ``sandbox.jobs.leases``).  A job
that is cancelled, or stopped by a suspension or by a grant that no longer allows it, keeps
its debit, as queued jobs cancelled for those reasons do.  Released or held jobs never fail,
so never refund.

**What.**  The grant's debit comes back exactly (a negative ledger entry in the ledger's
units, unique per debit: ``policies.grants.refund``) together with the dataset's
enterprise-wide cap, both or neither, audited ``job.refunded`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from policies import audit
from policies.budget import Budget
from policies.caps import restore_cap
from policies.grants import BudgetDebit, refund
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, Job, JobStatus

#: Appended to the reason of a failed job that paid something.
GIVEN_BACK = "; none of its data was read, so its budget was given back"
KEPT = "; its data was read, so its budget stays spent"


class ClaimLost(Exception):
    """The job was taken back from this worker (taken for dead) before it read the data:
    nothing was decrypted, and whoever holds the job now settles it."""


def data_read_marker(veil: Veil, job_id: str) -> Callable[[], None]:
    """What the worker hands to ``Decrypting`` for the job's dataset: once the data key
    is unwrapped, record (committed, under this worker's claim) that the job's data is
    read, or raise :class:`ClaimLost` so that nothing is decrypted."""

    def mark() -> None:
        with veil.db.transaction() as session:
            marked = session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == JobStatus.RUNNING,
                    Job.worker_id == veil.worker_id,
                )
                .values(data_read_at=func.coalesce(Job.data_read_at, veil.clock()))
                .execution_options(synchronize_session=False)
            )
        if marked.rowcount != 1:
            raise ClaimLost(f"job {job_id} is no longer this worker's; nothing was decrypted")

    return mark


@dataclass(frozen=True)
class Refund:
    """What one job got back, in the ledger's units, and the ledger entries that did it."""

    epsilon: int
    delta: int
    entries: tuple[str, ...]

    @property
    def amount(self) -> Budget:
        """What came back, as a budget."""
        return Budget(self.epsilon, self.delta)


def refund_unread(session: Session, job: Job, now: datetime) -> Refund | None:
    """Give a running job's debits back to its grant and dataset if it read no data; None
    when it read data, paid nothing, or was refunded already.

    The caller holds the job (locked, running under its claim) and ends it failed in this
    same transaction.  Grant and dataset come back together or not at all.
    """
    if job.status != JobStatus.RUNNING or job.data_read_at is not None:
        return None
    debits = list(
        session.scalars(
            select(BudgetDebit)
            .where(BudgetDebit.job_id == job.id, BudgetDebit.refund_of.is_(None))
            .order_by(BudgetDebit.created_at, BudgetDebit.id)
        )
    )
    if not debits:
        return None
    savepoint = session.begin_nested()
    entries = [refund(session, debit, now) for debit in debits]
    amount = sum((d.amount for d in debits), Budget())
    if any(e is None for e in entries) or not restore_cap(session, Dataset, job.dataset_id, amount):
        savepoint.rollback()  # refunded already (or the books disagree): nothing changes
        return None
    savepoint.commit()
    return Refund(
        amount.epsilon_units, amount.delta_units, tuple(e.id for e in entries if e is not None)
    )


def fail_with_refund(
    session: Session,
    job: Job,
    reason: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> Refund | None:
    """End a running job failed for a reason the provider did not cause, giving its debit
    back if it read no data; audited ``job.failed`` (and ``job.refunded``) here.

    The caller holds the job, locked and still running under its own claim.
    """
    given = refund_unread(session, job, now)
    paid = bool(job.cost)
    note = GIVEN_BACK if given else KEPT if paid else ""
    job.status, job.error, job.finished_at = JobStatus.FAILED, reason + note, now
    audit.record(
        session,
        "job.failed",
        outcome=audit.Outcome.FAILED,
        tenant_id=job.enterprise_id,
        resource=f"job:{job.id}",
        details={"reason": job.error, **(details or {})},
    )
    if given is not None:
        audit.record(
            session,
            "job.refunded",
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={
                "grant_id": job.grant_id,
                "dataset_id": job.dataset_id,
                **given.amount.describe(),
                "epsilon_units": given.epsilon,
                "delta_units": given.delta,
                "ledger_entries": list(given.entries),
                "why": "it failed before any of its data was read",
            },
        )
    return given
