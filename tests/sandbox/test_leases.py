"""Workers' leases: a running job ends failed exactly when its worker stopped or died, and a
job failed that way is never released afterwards."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from keys import LocalKeyServer
from policies import audit
from sandbox.api.thread import ApiThread
from sandbox.core import Veil, open_veil
from sandbox.leases import HOST, INTERRUPTED, WorkerLease, recover_interrupted_jobs
from sandbox.models import Job, JobStatus, JobWorkerLease
from sandbox.runner import claim_next_job, run_job
from tests.sandbox.conftest import PURPOSE, make_world, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def idle_veil(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[Veil]:
    """A Veil with no worker of its own: the test claims jobs as the workers it plays."""
    with open_veil(settings_for(tmp_path, key_server), worker=False) as running:
        yield running


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _claim_as(veil: Veil, worker: str | None) -> str:
    veil.worker_id = worker
    job_id = claim_next_job(veil)
    assert job_id is not None
    return job_id


def _status(veil: Veil, job_id: str) -> tuple[str, str | None]:
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status, job.error


def test_only_the_jobs_of_stopped_or_dead_workers_end_failed(idle_veil: Veil) -> None:
    veil = idle_veil
    now = veil.clock()
    leases = {
        "wrk_alive": JobWorkerLease(host="elsewhere/1", pid=1, seen_at=now),
        "wrk_lapsed": JobWorkerLease(host="elsewhere/1", pid=1, seen_at=now - timedelta(hours=1)),
        "wrk_crashed_here": JobWorkerLease(host=HOST, pid=_dead_pid(), seen_at=now),
        "wrk_alive_here": JobWorkerLease(host=HOST, pid=os.getppid(), seen_at=now),
    }
    with veil.db.transaction() as session:
        for lease_id, lease in leases.items():
            lease.id, lease.started_at = lease_id, now
            session.add(lease)
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        for _ in range(5):
            world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, [{"kind": "count"}])
    jobs = {worker: _claim_as(veil, worker) for worker in [*leases, "wrk_gone"]}

    assert recover_interrupted_jobs(veil) == 3
    assert _status(veil, jobs["wrk_alive"]) == (JobStatus.RUNNING, None)
    assert _status(veil, jobs["wrk_alive_here"]) == (JobStatus.RUNNING, None)
    for dead in ("wrk_lapsed", "wrk_crashed_here", "wrk_gone"):
        assert _status(veil, jobs[dead]) == (JobStatus.FAILED, INTERRUPTED)
    with veil.db.read() as session:
        assert set(session.scalars(select(JobWorkerLease.id))) == {"wrk_alive", "wrk_alive_here"}
    assert recover_interrupted_jobs(veil) == 0  # idempotent

    # The dead worker comes back to life and finishes its job: nothing is released, and the
    # job stays failed with one failure audited.
    veil.worker_id = "wrk_lapsed"
    run_job(veil, jobs["wrk_lapsed"])
    assert _status(veil, jobs["wrk_lapsed"]) == (JobStatus.FAILED, INTERRUPTED)
    with veil.db.read() as session:
        failures = session.scalar(
            select(func.count())
            .select_from(audit.AuditEvent)
            .where(audit.AuditEvent.action.in_(["job.failed", "job.released"]))
            .where(audit.AuditEvent.resource == f"job:{jobs['wrk_lapsed']}")
        )
    assert failures == 1


def test_a_lease_is_renewed_and_taken_again_after_it_lapsed(idle_veil: Veil) -> None:
    veil = idle_veil
    veil.settings.worker_heartbeat_s = 0.1
    lease = WorkerLease(veil)
    lease.start()
    try:
        assert veil.worker_id == lease.id
        with veil.db.read() as session:
            first = session.get(JobWorkerLease, lease.id)
            assert first is not None and first.host == HOST and first.pid == os.getpid()
            seen = first.seen_at
        time.sleep(0.5)
        with veil.db.read() as session:
            renewed = session.get(JobWorkerLease, lease.id)
            assert renewed is not None and renewed.seen_at > seen
        # Another process took it for dead and removed it: the next beat registers it again.
        with veil.db.transaction() as session:
            session.delete(session.get(JobWorkerLease, lease.id))
        time.sleep(0.5)
        with veil.db.read() as session:
            assert session.get(JobWorkerLease, lease.id) is not None
    finally:
        lease.stop()
    with veil.db.read() as session:
        assert session.get(JobWorkerLease, lease.id) is None  # given up on stop
