"""Several OS processes debit one grant and append audit events at once, on PostgreSQL:
the budget is never overspent, the ledger adds up, and the audit chain verifies."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session

from keys import LocalKeyServer
from policies import audit
from policies.db import new_id
from policies.grants import EPSILON_UNIT, BudgetDebit, Grant, GrantTerms, create_grant
from policies.principals import Role, create_principal
from sandbox.store.database import WRITE_LOCK_KEY, Database, migrate
from sandbox.store.models import Job, JobStatus
from tests.postgres.workers import append_events, claim_all, debit_and_audit, run_processes

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


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_processes_never_overspend_and_the_chain_holds(postgres_url: str) -> None:
    migrate(postgres_url)
    db = Database(postgres_url)
    try:
        grant_id = _grant(db)
        checks = 0

        def check_chain() -> None:
            # While they write, readers must always see a whole chain (one snapshot per check).
            nonlocal checks
            if checks < 200:
                with db.read() as session:
                    report = audit.verify(session, {})
                assert report.ok, report.problem
                checks += 1

        args = [(postgres_url, grant_id, ATTEMPTS, UNITS)] * PROCESSES
        reported = sum(run_processes(debit_and_audit, args, while_running=check_chain))

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


def test_a_switch_of_the_chain_hash_is_followed_by_every_process(postgres_url: str) -> None:
    """Processes append while another switches the chain to SM3: every append after the
    switch, in every process, is hashed with SM3 (the hash is read with the head, under
    its lock), and the chain verifies in full and from a position after the switch."""
    migrate(postgres_url)
    db = Database(postgres_url)
    switched_at = 0
    try:

        def switch_midway() -> None:
            nonlocal switched_at
            if not switched_at:
                with db.transaction() as session:
                    head = session.get(audit.AuditHead, 1)
                    if head is not None and head.seq >= 30:
                        assert audit.switch_chain_hash(session, audit.SM3)
                        switched_at = head.seq
            time.sleep(0.01)

        run_processes(append_events, [(postgres_url, 60)] * 3, while_running=switch_midway)
        assert switched_at, "the processes ended before the switch"
        with db.read() as session:
            assert audit.verify(session, {}) == audit.VerifyReport(181, 0)
            after = session.get(audit.AuditEvent, switched_at + 1)
            assert after is not None
            assert audit.verify(session, {}, since=(after.seq, after.hash)).ok
            later = session.scalars(
                select(audit.AuditEvent).where(audit.AuditEvent.seq > switched_at + 1)
            ).all()
        assert len({e.details["pid"] for e in later}) >= 2  # appended by several processes
        for e in later:
            assert e.hash == audit.chain_hash(e.prev_hash, e.canonical(), audit.SM3)
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
            # Taken with a bound on the wait (one round trip at BEGIN sets both).
            assert writer.scalar(text("SHOW lock_timeout")) == "30s"
            with db.read() as reader:
                assert reader.scalar(held.params(key=WRITE_LOCK_KEY)) == 1
                assert reader.scalar(select(func.count()).select_from(audit.AuditEvent)) == 0
        with db.read() as reader:
            assert reader.scalar(held.params(key=WRITE_LOCK_KEY)) == 0
            assert reader.scalar(select(func.count()).select_from(audit.AuditEvent)) == 1
    finally:
        db.dispose()


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
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
        config = key_server.config()
        args = [(postgres_url, config, tmp_path / f"w{i}") for i in range(PROCESSES)]
        ids = [job_id for claimed in run_processes(claim_all, args) for job_id in claimed]
        assert sorted(ids) == sorted(job.id for job in jobs)  # each once, none lost
        with db.read() as session:
            statuses = set(session.scalars(select(Job.status)))
        assert statuses == {JobStatus.RUNNING}
    finally:
        db.dispose()


class _Backends:
    """The server processes (backend pids) that one engine's pool has open.

    A pid counts from the pool's ``connect`` until its ``close``: SQLAlchemy announces a close
    before it closes, and a closed connection's server process may live on for a moment
    (longer on a busy machine) until it has exited, as may those of any other code that
    used the database just before.  Counting only these pids, still present on the server,
    measures what this engine holds and nothing else.
    """

    def __init__(self, engine: Engine) -> None:
        self._opened: set[int] = set()
        self._closed: set[int] = set()
        self._lock = threading.Lock()  # the pool's threads open and close while one counts
        event.listen(engine, "connect", self._connect)
        event.listen(engine, "close", self._close)
        event.listen(engine, "close_detached", self._close)

    def _connect(self, connection: Any, record: Any = None) -> None:
        with self._lock:
            self._opened.add(connection.info.backend_pid)

    def _close(self, connection: Any, record: Any = None) -> None:
        with self._lock:
            self._closed.add(connection.info.backend_pid)

    @property
    def opened(self) -> int:
        """How many connections the pool has opened."""
        with self._lock:
            return len(self._opened)

    @property
    def closed(self) -> int:
        """How many of them it has closed."""
        with self._lock:
            return len(self._closed)

    def count(self, session: Session) -> int:
        """How many of this engine's connections the server has now (from ``session``)."""
        with self._lock:
            pids = sorted(self._opened - self._closed)
        query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
        return int(session.scalar(query, {"pids": pids}) or 0)


def test_each_engine_keeps_to_its_pool_size(postgres_url: str) -> None:
    """``VEIL_DATABASE_POOL_SIZE``: with pool size 2 each engine opens at most 2 connections
    however many threads ask at once; the others wait for one, and all succeed; and it opens
    no other: the 2 serve every thread, none closed and opened again (each connection the
    server had is still there).  Counted on the server, among the connections of each engine."""
    migrate(postgres_url)
    db = Database(postgres_url, pool_size=2)
    writers, readers = _Backends(db.engine), _Backends(db._read_engine)
    threads, seen_reading, seen_writing = 12, [], []
    start = threading.Barrier(threads)

    def read() -> None:
        start.wait(30)
        with db.read() as session:
            seen_reading.append(readers.count(session))
            time.sleep(0.2)  # holding the connection, so the others must wait or open more

    def write() -> None:
        start.wait(30)
        with db.transaction() as session:
            audit.record(session, "test.event")
            seen_writing.append(writers.count(session))

    try:
        for work in (read, write):
            with ThreadPoolExecutor(threads) as pool:
                done = [pool.submit(work) for _ in range(threads)]
            assert [f.result() for f in done] == [None] * threads
            start.reset()
        assert (db.engine.pool.size(), db._read_engine.pool.size()) == (2, 2)
        assert len(seen_reading) == threads and max(seen_reading) <= 2, seen_reading
        assert len(seen_writing) == threads and max(seen_writing) <= 2, seen_writing
        with db.read() as session:
            assert session.scalar(select(func.count()).select_from(audit.AuditEvent)) == threads
            at_rest = (writers.count(session), readers.count(session))
        # Every connection opened is kept (this read holds one of the readers').
        assert (writers.opened, readers.opened) == at_rest, at_rest
        assert (writers.closed, readers.closed) == (0, 0)
        assert writers.opened <= 2 and readers.opened <= 2
    finally:
        db.dispose()
