"""VEIL_JOB_ENGINE=procrastinate: jobs run by ``veil worker`` processes through procrastinate's
queue on PostgreSQL; a worker killed in the middle of a job loses no job (it runs again on
another); a task never deferred is deferred again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from cluster.local import stop_processes
from keys import LocalKeyServer
from policies import audit
from sandbox.config.settings import Settings
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Job, JobWorkerLease
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]
ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a ``veil worker`` process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    fields = {
        "data_dir": settings.data_dir,
        "vault_addr": settings.vault_addr,
        "vault_role_id": settings.vault_role_id,
        "vault_secret_id": settings.vault_secret_id.get_secret_value()
        if settings.vault_secret_id
        else None,
        "vault_namespace": settings.vault_namespace,
        "vault_tenancy": str(settings.vault_tenancy),
        "database_url": settings.database_url,
        "job_engine": settings.job_engine,
        "job_poll_interval_s": settings.job_poll_interval_s,
        "worker_heartbeat_s": settings.worker_heartbeat_s,
        "worker_lease_s": settings.worker_lease_s,
    }
    env.update({f"VEIL_{k.upper()}": str(v) for k, v in fields.items() if v is not None})
    env["PYTHONPATH"] = str(ROOT)
    return env


class Workers:
    """``veil worker`` processes of this test, all stopped at its end."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env, self.logs = worker_env(settings), logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        # A worker stopped while starting first finishes warming its sandbox (it imports
        # the analytics stack): on a loaded machine that alone has taken over 30 s.
        stop_processes(self.processes, timeout_s=90)

    def output(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture
def settings(tmp_path: Path, key_server: LocalKeyServer, postgres_url: str) -> Settings:
    return settings_for(
        tmp_path,
        key_server,
        database_url=postgres_url,
        job_engine="procrastinate",
        worker_heartbeat_s=0.5,
        worker_lease_s=3.0,
    )


@pytest.fixture
def veil(settings: Settings) -> Iterator[Veil]:
    with open_veil(settings) as running:  # the API's process: it runs no job itself
        yield running


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(settings, tmp_path)
    yield running
    running.stop()


def _leases(veil: Veil) -> set[str]:
    with veil.db.read() as session:
        return set(session.scalars(select(JobWorkerLease.id)))


def _wait_leases(veil: Veil, count: int, workers: Workers, timeout: float = 90) -> set[str]:
    deadline = time.monotonic() + timeout
    while len(leases := _leases(veil)) != count:
        assert time.monotonic() < deadline, f"{len(leases)} workers up\n{workers.output()}"
        time.sleep(0.2)
    return leases


def _lease_pids(veil: Veil) -> dict[str, int]:
    with veil.db.read() as session:
        return {w: p for w, p in session.execute(select(JobWorkerLease.id, JobWorkerLease.pid))}


def _kill_mid_job(
    veil: Veil, worker: subprocess.Popen[bytes], lease: str, workers: Workers, timeout: float = 60
) -> str:
    """SIGKILL ``worker`` while it runs a job (frozen while that is checked, so the job cannot
    end in between); the job's id."""
    deadline = time.monotonic() + timeout
    running = select(Job.id).where(Job.status == "running", Job.worker_id == lease)
    while True:
        worker.send_signal(signal.SIGSTOP)
        with veil.db.read() as session:
            job_id = session.scalar(running.limit(1))
        if job_id is not None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            return job_id
        worker.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, f"no job ran on {lease}\n{workers.output()}"
        time.sleep(0.01)


def _actions(veil: Veil, job_id: str) -> list[str]:
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(audit.AuditEvent.action).where(audit.AuditEvent.resource == f"job:{job_id}")
            )
        )


def _submit(world: World, count: int) -> list[str]:
    return [
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, COUNT)["id"]
        for _ in range(count)
    ]


def _released(world: World, job_ids: list[str], workers: Workers) -> None:
    for job_id in job_ids:
        final = world.provider.wait_for_job(job_id, timeout=120)
        assert final["status"] == "released", f"{final}\n{workers.output()}"


@pytest.mark.slow  # worker processes on PostgreSQL, ~13 s (make test-slow)
def test_workers_run_the_jobs_and_a_lost_worker_loses_none(veil: Veil, workers: Workers) -> None:
    assert veil.worker_id is None  # the API process holds no lease: it runs no job
    first, second = workers.start(), workers.start()
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        leases = _wait_leases(veil, 2, workers)
        jobs = _submit(world, 6)
        _released(world, jobs, workers)
        with veil.db.read() as session:
            ran_by = set(session.scalars(select(Job.worker_id).where(Job.id.in_(jobs))))
        assert ran_by <= leases and None not in ran_by
        # One worker dies without a word in the middle of a job: that job runs again on the
        # other worker, every later job too, and the dead one's lease is removed.
        first_lease = next(w for w, p in _lease_pids(veil).items() if p == first.pid)
        later = _submit(world, 12)
        cut = _kill_mid_job(veil, first, first_lease, workers)
        _released(world, later, workers)
        assert len(_wait_leases(veil, 1, workers)) == 1
        assert second.poll() is None
        assert _actions(veil, cut).count("job.requeued") == 1
        assert _actions(veil, cut).count("job.released") == 1
    report = verify_chain(veil)
    assert report.ok, report.problem


@pytest.mark.slow  # worker processes on PostgreSQL, ~9 s (make test-slow)
def test_a_job_whose_task_was_lost_is_deferred_again(veil: Veil, workers: Workers) -> None:
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        jobs = _submit(world, 2)
        # As if the process had died between committing the job and deferring its task.
        with veil.db.engine.begin() as connection:
            gone = connection.execute(text("DELETE FROM procrastinate_jobs"))
        assert gone.rowcount == 2
        workers.start()
        _released(world, jobs, workers)


def test_a_stopped_worker_gives_up_its_lease(veil: Veil, workers: Workers) -> None:
    workers.start()
    _wait_leases(veil, 1, workers)
    workers.stop()
    assert workers.processes[0].returncode == 0, workers.output()
    assert _leases(veil) == set()


def test_the_procrastinate_engine_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="VEIL_DATABASE_URL"):
        Settings(data_dir=tmp_path, job_engine="procrastinate")
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "worker"],
        env={**worker_env(Settings(data_dir=tmp_path)), "VEIL_JOB_ENGINE": "embedded"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "VEIL_JOB_ENGINE=procrastinate" in done.stderr


def test_a_turns_tasks_are_deferred_together_each_with_its_own_lock(veil: Veil) -> None:
    """``ProcrastinateQueue.queued_all``: one task per job in one statement; when one of
    them is already there (its queueing lock taken), the others still go, one by one."""
    assert veil.queue is not None
    veil.queue.queued_all(["job_t1", "job_t2"])
    veil.queue.queued_all(["job_t2", "job_t3"])  # job_t2's task exists: refused together
    with veil.db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT queueing_lock, args->>'job_id', queue_name FROM procrastinate_jobs "
                "WHERE queueing_lock LIKE 'job_t%' ORDER BY queueing_lock"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("job_t1", "job_t1", "veil-jobs"),
        ("job_t2", "job_t2", "veil-jobs"),
        ("job_t3", "job_t3", "veil-jobs"),
    ]
