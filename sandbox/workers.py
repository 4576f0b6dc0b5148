"""Job workers: the embedded worker thread, the ``veil worker`` process, and the upkeep every
worker does.

``VEIL_JOB_ENGINE=embedded`` (the default): each server process runs a :class:`JobWorker`
thread that claims queued jobs from the database and runs them.  ``procrastinate``:
``veil worker`` processes (:func:`run_worker`) run them as procrastinate's tasks
(``sandbox.job_queue``).  Either way each worker holds a
lease (``sandbox.leases``) and does the same :class:`Upkeep`: fail the jobs of dead
workers, cancel expired queued jobs, sign audit checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from keys import KeyServerUnavailable
from policies import audit
from sandbox.core import Veil
from sandbox.isolation import SandboxPool
from sandbox.job_queue import QUEUE, RUN_JOB, procrastinate_app, requeue_lost
from sandbox.jobs import cancel_expired
from sandbox.leases import WorkerLease, recover_interrupted_jobs
from sandbox.nodes.feed import requeue_unacknowledged
from sandbox.runner import claim_job, claim_next_job, run_job
from sandbox.settings import Settings

log = logging.getLogger(__name__)


class Upkeep:
    """What every worker does now and then besides running jobs (each step is idempotent,
    so several workers doing it at once is harmless)."""

    def __init__(self, veil: Veil) -> None:
        self.veil = veil
        self._last_recovery = 0.0
        self._last_checkpoint = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last_recovery >= self.veil.settings.worker_heartbeat_s:
            self._last_recovery = now
            recovered = recover_interrupted_jobs(self.veil)
            if recovered:
                log.warning("%d job(s) of stopped or dead workers ended failed", recovered)
        requeue_unacknowledged(self.veil)  # before expiry: a requeued job may have expired
        cancel_expired(self.veil)
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        settings = self.veil.settings
        with self.veil.db.read() as session:
            head = session.get(audit.AuditHead, 1)
            last = (
                session.scalar(
                    select(audit.AuditCheckpoint.seq)
                    .order_by(audit.AuditCheckpoint.seq.desc())
                    .limit(1)
                )
                or 0
            )
            pending = (head.seq if head else 0) - last
        due = time.monotonic() - self._last_checkpoint >= settings.audit_checkpoint_interval_s
        if pending >= settings.audit_checkpoint_every or (pending > 0 and due):
            try:
                self.veil.checkpoint()
            except KeyServerUnavailable:
                log.warning("audit checkpoint postponed: key server unavailable")
            self._last_checkpoint = time.monotonic()


class JobWorker(threading.Thread):
    """The embedded, in-process worker: runs queued jobs and does the upkeep."""

    def __init__(self, veil: Veil) -> None:
        super().__init__(name="veil-job-worker", daemon=True)
        self.veil = veil
        self._stopping = threading.Event()
        self._upkeep = Upkeep(veil)

    def stop(self) -> None:
        self._stopping.set()
        self.veil.jobs_waiting.set()
        self.join(30)

    def run(self) -> None:
        # Sandboxes are started from this thread (bubblewrap's --die-with-parent).
        pools = _open_pools(self.veil)
        try:
            self._serve()
        finally:
            _close_pools(self.veil, pools)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            # Clear before looking, so a submission arriving meanwhile is never missed.
            self.veil.jobs_waiting.clear()
            job_id = None
            try:
                self._upkeep()
                job_id = claim_next_job(self.veil)
                if job_id is not None:
                    run_job(self.veil, job_id)
            except Exception:  # keep serving; the job itself was marked failed where possible
                log.exception("job worker iteration failed")
            if job_id is None:
                self.veil.jobs_waiting.wait(self.veil.settings.job_poll_interval_s)


class _Stopped(Exception):
    """SIGINT or SIGTERM came before procrastinate's worker took the signals over."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def run_worker(settings: Settings) -> None:
    """``veil worker``: run procrastinate's worker on this machine until SIGINT/SIGTERM.

    A signal that comes while the worker is still starting (before procrastinate installs
    its own handlers) stops it as cleanly: whatever had started stops, its lease given up.
    """
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _run_worker(settings)
    except _Stopped:
        log.info("veil worker stopped while starting")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run_worker(settings: Settings) -> None:
    from sandbox.core import open_veil

    with open_veil(settings, worker=False) as veil, contextlib.ExitStack() as stopping:
        lease = WorkerLease(veil)
        lease.start()
        stopping.callback(lease.stop)  # callbacks run last first: upkeep, jobs, lease
        jobs = _JobThread(veil)
        stopping.callback(jobs.close)
        upkeep = _UpkeepThread(veil, Upkeep(veil), lambda: requeue_lost(veil))
        upkeep.start()
        stopping.callback(upkeep.stop)
        app = procrastinate_app(settings, sync=False)

        def one_job(job_id: str) -> None:
            if claim_job(veil, job_id):
                run_job(veil, job_id)

        @app.task(name=RUN_JOB, queue=QUEUE)
        async def run_job_task(job_id: str) -> None:
            await asyncio.get_running_loop().run_in_executor(jobs.executor, one_job, job_id)

        log.info("veil worker %s waiting for jobs", lease.id)
        app.run_worker(
            queues=[QUEUE],
            name=lease.id,
            concurrency=1,  # one job at a time: it has the worker's sandbox and memory
            delete_jobs="successful",
            install_signal_handlers=True,
        )


class _JobThread:
    """The one thread that runs this worker's jobs and owns its warm sandbox (bubblewrap's
    --die-with-parent binds a sandbox to the thread that started it)."""

    def __init__(self, veil: Veil) -> None:
        self.veil = veil
        self.pools: tuple[SandboxPool, ...] = ()
        self.executor = ThreadPoolExecutor(1, "veil-job", initializer=self._prepare)
        self.executor.submit(lambda: None)  # starts the thread: the sandbox warms up now

    def _prepare(self) -> None:
        self.pools = _open_pools(self.veil)

    def close(self) -> None:
        self.executor.submit(lambda: _close_pools(self.veil, self.pools)).result(timeout=60)
        self.executor.shutdown()


def _open_pools(veil: Veil) -> tuple[SandboxPool, ...]:
    """The worker's sandboxes, from the calling thread (the one that will run the jobs):
    the warm worker of the built-in kinds, started now, and tier 5's, which keeps a spare
    from its first job on (PySyft takes seconds to import, and a worker that never runs
    tier 5 should not pay for it)."""
    pools = (
        SandboxPool(veil.settings, reusable=True),
        SandboxPool(veil.settings, warm=True, code=True),
    )
    veil.sandboxes, veil.code_sandboxes = pools
    try:
        pools[0].prepare()
    except Exception:  # no bubblewrap: every job will fail closed with the reason
        log.exception("the job sandbox cannot start")
    return pools


def _close_pools(veil: Veil, pools: tuple[SandboxPool, ...]) -> None:
    veil.sandboxes = veil.code_sandboxes = None
    for pool in pools:
        pool.close()


class _UpkeepThread(threading.Thread):
    def __init__(self, veil: Veil, *steps: Callable[[], object]) -> None:
        super().__init__(name="veil-upkeep", daemon=True)
        self.veil, self.steps = veil, steps
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)

    def run(self) -> None:
        while not self._stopping.wait(self.veil.settings.job_poll_interval_s * 4):
            for step in self.steps:
                try:
                    step()
                except Exception:
                    log.exception("worker upkeep failed; retried")
