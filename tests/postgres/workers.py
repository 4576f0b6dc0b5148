"""What each OS process of tests/postgres/test_concurrency.py runs (importable when spawned)."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from keys import KeyServerConfig, KeyService
from policies import audit
from policies.db import new_id
from policies.grants import Grant, debit
from sandbox.core import Veil
from sandbox.database import Database
from sandbox.runner import claim_next_job
from sandbox.settings import Settings


def debit_and_audit(
    url: str, grant_id: str, attempts: int, units: int, start: Barrier, granted_out: Queue[int]
) -> None:
    """Try ``attempts`` debits of ``units`` ε, each audited in its own transaction, as a job
    submission does; put how many were granted on ``granted_out``."""
    db = Database(url)
    granted = 0
    try:
        start.wait(60)
        for _ in range(attempts):
            job_id = new_id("job")
            with db.transaction() as session:
                grant = session.get(Grant, grant_id)
                assert grant is not None
                ok = debit(session, grant, job_id, units, 0)
                audit.record(
                    session,
                    "budget.debited" if ok else "job.denied",
                    outcome=audit.Outcome.OK if ok else audit.Outcome.DENIED,
                    tenant_id=grant.enterprise_id,
                    resource=f"grant:{grant_id}",
                    details={"job_id": job_id, "epsilon_units": units},
                )
            granted += ok
    finally:
        db.dispose()
    granted_out.put(granted)


def claim_all(
    url: str, config: KeyServerConfig, data_dir: Path, start: Barrier, out: Queue[list[str]]
) -> None:
    """Claim queued jobs as a job worker does, until none is left; put the ids on ``out``."""
    db = Database(url)
    veil = Veil(settings=Settings(data_dir=data_dir), db=db, keys=KeyService.connect(config))
    claimed: list[str] = []
    try:
        start.wait(60)
        while (job_id := claim_next_job(veil)) is not None:
            claimed.append(job_id)
    finally:
        db.dispose()
    out.put(claimed)
