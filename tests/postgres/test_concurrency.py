"""Several OS processes debit one grant and append audit events at once, on PostgreSQL:
the budget is never overspent, the ledger adds up, and the audit chain verifies."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from keys import LocalKeyServer
from policies import audit
from policies.db import new_id
from policies.grants import EPSILON_UNIT, BudgetDebit, Grant, GrantTerms, create_grant
from policies.principals import Role, create_principal
from sandbox.database import WRITE_LOCK_KEY, Database, migrate
from sandbox.models import Job, JobStatus
from tests.postgres.workers import claim_all, debit_and_audit

pytestmark = pytest.mark.integration

PROCESSES = 4
ATTEMPTS = 40  # per process: 160 debits asked for, 100 fit
UNITS = EPSILON_UNIT // 100  # ε 0.01 each, of a budget of 1.0
JOBS = 60


def _grant(db: Database) -> str:
    now = datetime.now(UTC)
    with db.transaction() as session:
        enterprise = create_principal(session, Role.ENTERPRISE, "Acme", slug="acme")
        provider = create_principal(session, Role.PROVIDER, "Predicta")
        terms = GrantTerms(
            provider_id=provider.id,
            dataset_ids=("ds_test",),
            columns=("yield_pct",),
            tiers=(3,),
            purposes=("process-optimization",),
            valid_from=now,
            valid_until=now + timedelta(days=1),
            epsilon=1.0,
        )
        grant = create_grant(session, enterprise.id, terms, min_group_floor=10)
        audit.record(session, "grant.created", tenant_id=enterprise.id, resource=grant.id)
        return grant.id


def test_processes_never_overspend_and_the_chain_holds(postgres_url: str) -> None:
    migrate(postgres_url)
    db = Database(postgres_url)
    try:
        grant_id = _grant(db)
        spawn = multiprocessing.get_context("spawn")
        start, granted = spawn.Barrier(PROCESSES), spawn.Queue()
        workers = [
            spawn.Process(
                target=debit_and_audit,
                args=(postgres_url, grant_id, ATTEMPTS, UNITS, start, granted),
            )
            for _ in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        # While they write, readers must always see a whole chain (one snapshot per check).
        checks = 0
        while any(w.is_alive() for w in workers) and checks < 200:
            with db.read() as session:
                report = audit.verify(session, {})
            assert report.ok, report.problem
            checks += 1
            time.sleep(0.02)
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * PROCESSES
        reported = sum(granted.get(timeout=5) for _ in workers)

        with db.read() as session:
            grant = session.get(Grant, grant_id)
            assert grant is not None
            debits = session.execute(
                select(func.count(), func.sum(BudgetDebit.epsilon)).where(
                    BudgetDebit.grant_id == grant_id
                )
            ).one()
            report = audit.verify(session, {})
            by_action = select(audit.AuditEvent.action, func.count()).group_by(
                audit.AuditEvent.action
            )
            actions = {action: count for action, count in session.execute(by_action)}
        assert grant.epsilon_spent <= grant.epsilon_budget
        assert grant.epsilon_spent == grant.epsilon_budget  # 160 asked, 100 fit: all spent
        assert tuple(debits) == (reported, grant.epsilon_spent) == (100, 100 * UNITS)
        assert report.ok, report.problem
        assert report.events == 1 + PROCESSES * ATTEMPTS
        assert actions == {"grant.created": 1, "budget.debited": 100, "job.denied": 60}
        assert checks > 0
    finally:
        db.dispose()


def test_a_writer_holds_the_write_lock_and_readers_go_on(postgres_url: str) -> None:
    """What makes the writers of every process take turns: one advisory lock per write
    transaction, held until it ends; a reader meanwhile neither waits nor sees the write."""
    migrate(postgres_url)
    db = Database(postgres_url)
    held = (
        select(func.count())
        .select_from(text("pg_locks"))
        .where(text("locktype = 'advisory' AND objid = :key AND granted"))
    )
    try:
        with db.transaction() as writer:
            audit.record(writer, "test.event")
            with db.read() as reader:
                assert reader.scalar(held.params(key=WRITE_LOCK_KEY)) == 1
                assert reader.scalar(select(func.count()).select_from(audit.AuditEvent)) == 0
        with db.read() as reader:
            assert reader.scalar(held.params(key=WRITE_LOCK_KEY)) == 0
            assert reader.scalar(select(func.count()).select_from(audit.AuditEvent)) == 1
    finally:
        db.dispose()


def test_processes_claim_each_queued_job_once(
    postgres_url: str, key_server: LocalKeyServer, tmp_path: Path
) -> None:
    """Job workers of several processes: every queued job is claimed by exactly one."""
    migrate(postgres_url)
    db = Database(postgres_url)
    try:
        with db.transaction() as session:
            provider = create_principal(session, Role.PROVIDER, "Predicta")
            jobs = [
                Job(id=new_id("job"), provider_id=provider.id, dataset_id="ds_test", purpose="p",
                    tier=3, query={}, epsilon=0, delta=0, status=JobStatus.QUEUED, reasons=[])
                for _ in range(JOBS)
            ]  # fmt: skip
            session.add_all(jobs)
        spawn = multiprocessing.get_context("spawn")
        start, claimed = spawn.Barrier(PROCESSES), spawn.Queue()
        config = key_server.config()
        workers = [
            spawn.Process(
                target=claim_all, args=(postgres_url, config, tmp_path / f"w{i}", start, claimed)
            )
            for i in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * PROCESSES
        ids = [job_id for _ in workers for job_id in claimed.get(timeout=5)]
        assert sorted(ids) == sorted(job.id for job in jobs)  # each once, none lost
        with db.read() as session:
            statuses = set(session.scalars(select(Job.status)))
        assert statuses == {JobStatus.RUNNING}
    finally:
        db.dispose()
