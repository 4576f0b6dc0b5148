"""Workers' leases: a running job is taken back exactly when its worker stopped or died; it runs
once more, and the dead worker settles nothing afterwards."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from keys import LocalKeyServer
from policies import audit
from sandbox.jobs.leases import (
    HOST,
    INTERRUPTED,
    MAX_ATTEMPTS,
    WorkerLease,
    recover_interrupted_jobs,
)
from sandbox.jobs.outcomes import CANCELLED, fail_running
from sandbox.jobs.refunds import GIVEN_BACK, KEPT, data_read_marker
from sandbox.jobs.runner import claim_next_job, run_job
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Job, JobStatus, JobWorkerLease
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


def _add_lease(veil: Veil, lease_id: str, host: str, pid: int, seen: timedelta) -> None:
    now = veil.clock()
    with veil.db.transaction() as session:
        session.add(
            JobWorkerLease(id=lease_id, host=host, pid=pid, started_at=now, seen_at=now - seen)
        )


def _events(veil: Veil, job_id: str) -> list[str]:
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(audit.AuditEvent.action)
                .where(audit.AuditEvent.resource == f"job:{job_id}")
                .order_by(audit.AuditEvent.seq)
            )
        )


def test_only_the_jobs_of_stopped_or_dead_workers_are_taken_back(idle_veil: Veil) -> None:
    veil = idle_veil
    _add_lease(veil, "wrk_alive", "elsewhere/1", 1, timedelta(0))
    _add_lease(veil, "wrk_lapsed", "elsewhere/1", 1, timedelta(hours=1))
    _add_lease(veil, "wrk_crashed_here", HOST, _dead_pid(), timedelta(0))
    _add_lease(veil, "wrk_alive_here", HOST, os.getppid(), timedelta(0))
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        for _ in range(5):
            world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, [{"kind": "count"}])
    workers = ["wrk_alive", "wrk_lapsed", "wrk_crashed_here", "wrk_alive_here", "wrk_gone"]
    jobs = {worker: _claim_as(veil, worker) for worker in workers}

    assert recover_interrupted_jobs(veil) == 3
    assert _status(veil, jobs["wrk_alive"]) == (JobStatus.RUNNING, None)
    assert _status(veil, jobs["wrk_alive_here"]) == (JobStatus.RUNNING, None)
    for dead in ("wrk_lapsed", "wrk_crashed_here", "wrk_gone"):
        assert _status(veil, jobs[dead]) == (JobStatus.QUEUED, None)  # runs again
        assert _events(veil, jobs[dead])[-1] == "job.requeued"
    with veil.db.read() as session:
        assert set(session.scalars(select(JobWorkerLease.id))) == {"wrk_alive", "wrk_alive_here"}
    assert recover_interrupted_jobs(veil) == 0  # idempotent


def test_a_job_taken_back_runs_once_more_and_its_dead_worker_settles_nothing(
    idle_veil: Veil,
) -> None:
    veil = idle_veil
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        submitted = world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, [{"kind": "count"}])
        job_id = _claim_as(veil, "wrk_first")  # no lease: its worker is gone
        assert job_id == submitted["id"]
        assert recover_interrupted_jobs(veil) == 1
        # Another worker claims it again; the first one, alive after all, finishes its run:
        # its outcome is not written (the job runs under the second worker's claim).
        assert _claim_as(veil, "wrk_second") == job_id
        veil.worker_id = "wrk_first"
        run_job(veil, job_id)
        assert fail_running(veil, job_id, "a late failure") is False
        assert _status(veil, job_id) == (JobStatus.RUNNING, None)
        # The second worker dies too: the job fails now, once.  Neither worker read its
        # data (the first one found the job was no longer its own), so its debit comes back.
        assert recover_interrupted_jobs(veil) == 1
        assert _status(veil, job_id) == (JobStatus.FAILED, INTERRUPTED + GIVEN_BACK)
        events = _events(veil, job_id)
        assert events.count("job.requeued") == 1 and events.count("job.failed") == 1
        assert events[-1] == "job.refunded" and "job.released" not in events
        final = world.provider.get_job(job_id)
        assert final["status"] == "failed" and final["error"] == INTERRUPTED + GIVEN_BACK
        assert world.provider.get_grant(world.grant_id)["budget"]["epsilon_spent"] == 0
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.attempts == MAX_ATTEMPTS


def test_a_job_whose_dead_worker_had_read_its_data_keeps_its_debit(idle_veil: Veil) -> None:
    veil = idle_veil
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, [{"kind": "count"}])
        job_id = _claim_as(veil, "wrk_first")
        data_read_marker(veil, job_id)()  # it unwrapped the data key, then died
        assert recover_interrupted_jobs(veil) == 1
        assert _claim_as(veil, "wrk_second") == job_id
        assert recover_interrupted_jobs(veil) == 1  # the second one died before reading
        assert _status(veil, job_id) == (JobStatus.FAILED, INTERRUPTED + KEPT)
        assert "job.refunded" not in _events(veil, job_id)
        spent = world.provider.get_grant(world.grant_id)["budget"]["epsilon_spent"]
        assert spent == pytest.approx(0.25)


def test_a_cancelled_job_whose_worker_died_is_not_run_again(idle_veil: Veil) -> None:
    veil = idle_veil
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        submitted = world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, [{"kind": "count"}])
        job_id = _claim_as(veil, "wrk_gone")
        world.provider.cancel_job(submitted["id"])  # asked to stop while running
        assert recover_interrupted_jobs(veil) == 1
        assert _status(veil, job_id) == (JobStatus.FAILED, CANCELLED)
        assert "job.requeued" not in _events(veil, job_id)
        assert world.provider.get_job(job_id)["status"] == "failed"


def test_a_job_taken_back_is_released_by_its_next_worker(idle_veil: Veil) -> None:
    veil = idle_veil
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        submitted = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, [{"kind": "count"}])
        job_id = _claim_as(veil, "wrk_first")
        recover_interrupted_jobs(veil)
        assert _claim_as(veil, "wrk_second") == job_id
        run_job(veil, job_id)
        assert world.provider.wait_for_job(submitted["id"], timeout=5)["status"] == "released"
        assert _events(veil, job_id).count("job.released") == 1
        spent = world.provider.get_grant(world.grant_id)["budget"]["epsilon_spent"]
        assert spent == pytest.approx(0.25)  # debited once, for the one release


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
