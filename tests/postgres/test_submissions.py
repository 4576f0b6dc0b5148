"""Job submissions from two OS processes at once, on PostgreSQL, through the submission path
itself (decision, both debits, the job row, its audit events in one append): neither the
grant's budget nor the dataset's cap is ever overspent, the grant, the cap, the ledger and
the jobs agree, and the audit chain verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from keys import LocalKeyServer
from policies.audit import AuditEvent
from policies.grants import EPSILON_UNIT, BudgetDebit, Grant
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Dataset, Job, JobStatus
from tests.postgres.workers import run_processes, submit_many
from tests.sandbox.conftest import make_world, settings_for

pytestmark = pytest.mark.integration

PROCESSES, THREADS, ATTEMPTS = 2, 3, 12  # 72 submissions asked for
COST = 0.02


@pytest.fixture
def veil(tmp_path: Path, key_server: LocalKeyServer, postgres_url: str) -> Iterator[Veil]:
    settings = settings_for(tmp_path, key_server, database_url=postgres_url)
    with open_veil(settings, worker=False) as running:
        yield running


@pytest.mark.parametrize(
    ("limit", "fits"),
    [("grant", 50), ("cap", 12)],
    ids=["the grant's budget runs out", "the dataset's cap runs out first"],
)
def test_two_processes_submitting_never_overspend(
    veil: Veil, key_server: LocalKeyServer, tmp_path: Path, limit: str, fits: int
) -> None:
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)  # ε 1.0: 50 jobs of 0.02
    with veil.db.transaction() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None
        provider_id = grant.provider_id
        if limit == "cap":  # ε 0.25 for every provider together: the cap refuses the 13th
            session.execute(
                update(Dataset)
                .where(Dataset.id == world.dataset_id)
                .values(epsilon_cap=EPSILON_UNIT // 4)
            )
    args = [
        (veil.db.url, key_server.config(), tmp_path / f"p{i}", provider_id, world.dataset_id,
         THREADS, ATTEMPTS, COST)
        for i in range(PROCESSES)
    ]  # fmt: skip
    accepted = sum(run_processes(submit_many, args))
    assert accepted == fits  # every job that fits, and not one more
    units = fits * int(COST * EPSILON_UNIT)
    with veil.db.read() as session:
        grant = session.get(Grant, world.grant_id)
        dataset = session.get(Dataset, world.dataset_id)
        assert grant is not None and dataset is not None
        ledger = session.scalar(
            select(func.sum(BudgetDebit.epsilon)).where(BudgetDebit.grant_id == grant.id)
        )
        queued = list(session.scalars(select(Job).where(Job.status == JobStatus.QUEUED)))
        denied = session.scalar(
            select(func.count()).select_from(Job).where(Job.status == JobStatus.DENIED)
        )
        actions = dict(
            session.execute(
                select(AuditEvent.action, func.count()).group_by(AuditEvent.action)
            ).all()
        )
    # The grant, the cap, the ledger and the queued jobs say the same.
    assert grant.epsilon_spent == dataset.epsilon_spent == ledger == units
    assert sum(job.epsilon for job in queued) == units and len(queued) == fits
    assert denied == PROCESSES * THREADS * ATTEMPTS - fits
    assert actions["job.submitted"] == actions["budget.debited"] == fits
    assert actions["job.denied"] == denied
    report = verify_chain(veil)
    assert report.ok, report.problem
