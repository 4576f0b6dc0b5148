"""Job workers: the embedded worker thread, the sandboxes every worker keeps, and the upkeep
every worker does.

``VEIL_JOB_ENGINE=embedded`` (the default): each server process runs a :class:`JobWorker`
thread that claims queued jobs from the database and runs them.  ``procrastinate``:
``veil worker`` processes (``sandbox.service.run_worker``) run them as procrastinate's tasks
(``sandbox.jobs.queue``).  Either way each worker holds a
lease (``sandbox.jobs.leases``) and does the same :class:`Upkeep`: fail the jobs of dead
workers, cancel expired queued jobs, shred outputs past their commitment letter's retention
period (``sandbox.jobs.retention``), sign audit checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from keys import KeyServerUnavailable
from policies import audit
from sandbox.isolation.pool import SandboxPool
from sandbox.jobs.leases import recover_interrupted_jobs, requeue_unacknowledged
from sandbox.jobs.retention import shred_expired
from sandbox.jobs.runner import claim_next_job, run_job
from sandbox.jobs.submit import cancel_expired
from sandbox.runtime import verification
from sandbox.runtime.veil import Veil

log = logging.getLogger(__name__)


class Upkeep:
    """What every worker does now and then besides running jobs (each step is idempotent,
    so several workers doing it at once is harmless)."""

    def __init__(self, veil: Veil) -> None:
        self.veil = veil
        self._last_recovery = 0.0
        self._last_checkpoint = time.monotonic()
        self._last_verified = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last_recovery >= self.veil.settings.worker_heartbeat_s:
            self._last_recovery = now
            recovered = recover_interrupted_jobs(self.veil)
            if recovered:
                log.warning("%d job(s) of stopped or dead workers ended failed", recovered)
            shred_expired(self.veil)  # commitment letters past their retention period
        requeue_unacknowledged(self.veil)  # before expiry: a requeued job may have expired
        cancel_expired(self.veil)
        self._maybe_checkpoint()
        self._maybe_verify()

    def _maybe_verify(self) -> None:
        """A full verification of the audit chain, recorded, every ``audit_verify_interval_s``
        when anything was logged since the last one (``sandbox.runtime.verification``)."""
        if time.monotonic() - self._last_verified < self.veil.settings.audit_verify_interval_s:
            return
        self._last_verified = time.monotonic()
        if not verification.logged_since_last(self.veil):
            return
        try:
            verification.record_full(self.veil)
        except KeyServerUnavailable:
            log.warning("audit verification postponed: key server unavailable")

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
        pools = open_pools(self.veil)
        try:
            self._serve()
        finally:
            close_pools(self.veil, pools)

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


def open_pools(veil: Veil) -> tuple[SandboxPool, ...]:
    """The worker's sandboxes, from the calling thread (the one that will run the jobs):
    the warm worker of the built-in kinds, started now (unless ``job_sandbox_ahead`` is
    off: then with the first job), and tier 5's, which keeps a spare from its first job on
    (PySyft takes seconds to import, and a worker that never runs tier 5 should not pay
    for it)."""
    pools = (
        SandboxPool(veil.settings, reusable=True),
        SandboxPool(veil.settings, warm=True, code=True),
    )
    veil.sandboxes, veil.code_sandboxes = pools
    if not veil.settings.job_sandbox_ahead:
        return pools
    try:
        pools[0].prepare()
    except Exception:  # no bubblewrap: every job will fail closed with the reason
        log.exception("the job sandbox cannot start")
    return pools


def close_pools(veil: Veil, pools: tuple[SandboxPool, ...]) -> None:
    veil.sandboxes = veil.code_sandboxes = None
    for pool in pools:
        pool.close()
