"""What must hold after a crash or an outage, read from the database, the disk and the API.

- jobs: none is left queued or running once the server has settled;
- books: every released job has its debit in the privacy ledger, the ledger (debits less
  refunds) adds up to what the grant and the dataset say was spent, and that is at least what
  was released; a refund went only to a failed job that read no data, once, for its whole
  debit; and no job that failed before reading its data kept its debit (budget lost);
- releases: each job was released at most once (one ``job.released`` event), and only jobs whose
  status is ``released`` have one;
- audit: the chain verifies (``GET /v1/audit/verify``:
  ``sandbox.oversight.audit_log.verify_chain``);
- disk: no plaintext of the dataset under the cluster's home (data directory, TMPDIR, logs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policies.audit import AuditEvent
from policies.grants import BudgetDebit, Grant
from reliability._cluster import CANARY, CSV_HEADER, Cluster, World
from sandbox.client import VeilClient
from sandbox.store.database import make_engine
from sandbox.store.models import Dataset, Job, JobStatus

PARQUET_MAGIC = b"PAR1"
_OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)


@contextmanager
def snapshot(cluster: Cluster) -> Iterator[Session]:
    """A read-only session on the cluster's database (the server may be running)."""
    engine = make_engine(cluster.db_url, read_only=True)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def open_jobs(cluster: Cluster) -> list[str]:
    with snapshot(cluster) as session:
        return list(session.scalars(select(Job.id).where(Job.status.in_(_OPEN))))


def settle(cluster: Cluster, job_ids: set[str] | None, timeout_s: float) -> list[str]:
    """Wait until the jobs (all, when None) are neither queued nor running; the stuck ones."""
    deadline = time.monotonic() + timeout_s
    while True:
        stuck = [j for j in open_jobs(cluster) if job_ids is None or j in job_ids]
        if not stuck or time.monotonic() > deadline:
            return stuck
        time.sleep(0.2)


def released_since(cluster: Cluster, since: datetime) -> bool:
    """Whether a job submitted after ``since`` has been released (service goes on)."""
    with snapshot(cluster) as session:
        query = select(Job.id).where(Job.status == JobStatus.RELEASED, Job.created_at > since)
        return session.scalar(query.limit(1)) is not None


@dataclass(frozen=True)
class Books:
    """The jobs' final states and the ledger, counted."""

    statuses: dict[str, int]
    ledger: tuple[str, ...]  # what breaks "no release without its debit"; empty when it holds
    releases: tuple[str, ...]  # what breaks "released at most once, and only when released"
    refunded: int = 0  # failed jobs that read no data and got their debit back
    lost: tuple[str, ...] = ()  # failed jobs that read no data and kept their debit

    @property
    def released(self) -> int:
        return self.statuses.get(JobStatus.RELEASED, 0)


def books(cluster: Cluster, world: World) -> Books:
    """Count the jobs and check the ledger and the release events against them."""
    with snapshot(cluster) as session:
        jobs = list(session.scalars(select(Job)))
        totals = select(BudgetDebit.job_id, func.sum(BudgetDebit.epsilon))
        debits: dict[str, int] = {  # net of refunds
            job_id: int(total)
            for job_id, total in session.execute(totals.group_by(BudgetDebit.job_id))
        }
        refunds = list(
            session.scalars(select(BudgetDebit).where(BudgetDebit.refund_of.is_not(None)))
        )
        grant = session.get(Grant, world.grant_id)
        dataset = session.get(Dataset, world.dataset_id)
        events = Counter(
            session.scalars(select(AuditEvent.resource).where(AuditEvent.action == "job.released"))
        )
    assert grant is not None and dataset is not None
    released = [j for j in jobs if j.status == JobStatus.RELEASED]
    ledger = [f"job {j.id} released without its debit" for j in released
              if debits.get(j.id, 0) < j.epsilon]  # fmt: skip
    releases = [
        *(f"job {r} released {n} times" for r, n in events.items() if n > 1),
        *(f"job {j.id} has a release event but is {j.status}" for j in jobs
          if events.get(f"job:{j.id}") and j.status != JobStatus.RELEASED),
        *(f"job {j.id} is released without a release event" for j in released
          if not events.get(f"job:{j.id}")),
    ]  # fmt: skip
    paid = sum(debits.values())
    spent_released = sum(j.epsilon for j in released)
    if grant.epsilon_spent != paid:
        ledger.append(f"the grant's spend {grant.epsilon_spent} != its debits {paid}")
    if dataset.epsilon_spent != paid:  # one grant on the world's dataset
        ledger.append(f"the dataset's spend {dataset.epsilon_spent} != its debits {paid}")
    if min(grant.epsilon_spent, dataset.epsilon_spent) < spent_released:
        ledger.append("less spent than released")
    by_id = {j.id: j for j in jobs}
    ledger += _refund_problems(refunds, by_id, debits)
    lost = tuple(
        j.id
        for j in jobs
        if j.status == JobStatus.FAILED and j.data_read_at is None and debits.get(j.id, 0) > 0
    )
    refunded = len({r.job_id for r in refunds})
    statuses = dict(Counter(j.status for j in jobs))
    return Books(statuses, tuple(ledger), tuple(releases), refunded, lost)


def _refund_problems(
    refunds: list[BudgetDebit], jobs: dict[str, Job], net: dict[str, int]
) -> list[str]:
    """What breaks "a refund goes only to a failed job that read no data, once, in full"."""
    problems = []
    for entry in refunds:
        job = jobs.get(entry.job_id)
        if job is None or job.status != JobStatus.FAILED or job.data_read_at is not None:
            problems.append(f"job {entry.job_id} was refunded but is not a failed unread job")
        elif net.get(entry.job_id, 0) != 0:
            problems.append(f"job {entry.job_id} was refunded other than its whole debit")
    twice = [job for job, n in Counter(r.job_id for r in refunds).items() if n > 1]
    problems += [f"job {job} was refunded twice" for job in twice]
    return problems


def verify_audit(cluster: Cluster, world: World) -> tuple[bool, str]:
    """The existing chain verification, through the API (signed checkpoints included)."""
    with VeilClient(cluster.url, world.operator_token, timeout=120) as operator:
        report = operator.verify_audit()
    ok = bool(report["ok"])
    what = f"{report['events']} events, {report['checkpoints']} checkpoints"
    return ok, what if ok else f"{what}: {report['problem']}"


def plaintext_on_disk(home: Path) -> list[str]:
    """Files under ``home`` holding the dataset's plaintext: a canary value, the CSV's header,
    or a Parquet file (Veil's plaintext form; every stored object is ciphertext)."""
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # gone meanwhile (a rotated WAL, a finished .partial)
        if CANARY in data or CSV_HEADER in data or data.startswith(PARQUET_MAGIC):
            found.append(str(path.relative_to(home)))
    return found
