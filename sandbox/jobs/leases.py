"""Job workers' leases: which process runs which job, and which running jobs were interrupted.

Every process that claims jobs (a server's embedded worker thread, or a ``veil worker``)
holds a lease, a row of ``job_workers`` renewed every ``VEIL_WORKER_HEARTBEAT_S``, and a
claim records the lease on the job.  A running job was interrupted when its worker's lease

- is gone: the worker stopped;
- was last renewed more than ``VEIL_WORKER_LEASE_S`` ago: the worker or its machine died,
  or lost the database;
- belongs to a process of this machine that is no longer alive: found at once, so a
  server restarted after a crash settles its jobs without waiting out the lease.

An interrupted job is queued again, audited (``job.requeued``), and runs on another worker:
nothing was released, and its budget, debited once at submission, pays for the one release
it may still have.  A job interrupted a second time (``MAX_ATTEMPTS``) ends failed, so a job
that kills its workers cannot loop; its budget stays spent if a worker had read its data (as
any job that kills its workers did), and is given back if none had (``sandbox.jobs.refunds``).  A
job whose cancellation was asked ends failed at once, its budget spent.  The worker that
was taken for dead settles nothing afterwards: every outcome is written only under the claim
it was run with (``sandbox.jobs.outcomes``).

Any worker makes that finding at start and then periodically; it is idempotent, and a job
that ended meanwhile is left as it ended.  Leases compare the database's stored times, so
the machines' clocks must agree to well within the lease (NTP).

A node's claim has no lease: a job a node claimed but never acknowledged (``taken``)
within ``HANDOVER_S`` is queued again (:func:`requeue_unacknowledged`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from policies import audit
from policies.db import new_id
from sandbox.jobs.outcomes import CANCELLED
from sandbox.jobs.refunds import fail_with_refund
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus, JobWorkerLease
from sandbox.store.node_models import Node

log = logging.getLogger(__name__)

#: How long a claimed job waits for its node to acknowledge it (``taken``) before it is
#: queued again: a claim answered while the node was already away (a long poll in flight
#: when it stopped or lost its network) must not keep the job from expiring or waiting.
HANDOVER_S = 30.0

#: How many times a job may be claimed: once more after its worker died, then it fails.
MAX_ATTEMPTS = 2
REQUEUED = "its worker stopped or died before the job ended; it runs again (nothing was released)"
INTERRUPTED = "interrupted: its workers stopped or died twice before it ended"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "-"


#: This machine as leases name it: two containers of one host have different hostnames,
#: and a rebooted machine a different boot id.
HOST = f"{socket.gethostname()[:180]}/{_boot_id()}"

_held: set[str] = set()  # the leases this process holds now
_held_lock = threading.Lock()


def _running_here(pid: int) -> bool:
    """Whether process ``pid`` of this machine is alive (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class WorkerLease(threading.Thread):
    """This process's lease as a job worker: registered on :meth:`start`, renewed every
    heartbeat, and given up by :meth:`stop` (any job still running under it is then taken
    back)."""

    def __init__(self, veil: Veil) -> None:
        super().__init__(name="veil-worker-lease", daemon=True)
        self.veil = veil
        self.id = new_id("wrk")
        self._stopping = threading.Event()

    def start(self) -> None:
        self._write(register=True)
        with _held_lock:
            _held.add(self.id)
        self.veil.worker_id = self.id
        super().start()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(10)
        with _held_lock:
            _held.discard(self.id)
        try:
            with self.veil.db.transaction() as session:
                session.execute(delete(JobWorkerLease).where(JobWorkerLease.id == self.id))
        except Exception:  # the database is gone: the lease lapses by itself
            log.warning("could not give up job worker lease %s", self.id, exc_info=True)

    def run(self) -> None:
        while not self._stopping.wait(self.veil.settings.worker_heartbeat_s):
            try:
                self._write(register=False)
            except Exception:  # the database is unreachable: retried at the next beat
                log.warning("job worker lease %s not renewed", self.id, exc_info=True)

    def _write(self, *, register: bool) -> None:
        now = self.veil.clock()
        with self.veil.db.transaction() as session:
            if not register:
                renewed = session.execute(
                    update(JobWorkerLease).where(JobWorkerLease.id == self.id).values(seen_at=now)
                )
                if renewed.rowcount == 1:
                    return
                # Taken for dead (the lease lapsed): its running jobs were taken back, and it
                # settles none of them (sandbox.jobs.outcomes); it goes on with a lease anew.
                log.warning("job worker lease %s had lapsed; registering again", self.id)
            session.add(
                JobWorkerLease(id=self.id, host=HOST, pid=os.getpid(), started_at=now, seen_at=now)
            )


def _dead(lease: JobWorkerLease, oldest_alive: datetime) -> bool:
    if lease.seen_at < oldest_alive:
        return True
    if lease.host != HOST:
        return False
    if lease.pid == os.getpid():
        with _held_lock:
            return lease.id not in _held  # an earlier life of this process's pid
    return not _running_here(lease.pid)


def recover_interrupted_jobs(veil: Veil) -> int:
    """Settle the running jobs whose worker stopped or died (see the module); return how many."""
    oldest_alive = veil.clock() - timedelta(seconds=veil.settings.worker_lease_s)
    with veil.db.read() as session:  # mostly nothing to do: no write, no lock
        found = _interrupted(session, oldest_alive)
    if not any(found):
        return 0
    with veil.db.transaction() as session:
        dead, interrupted = _interrupted(session, oldest_alive)
        if dead:
            session.execute(delete(JobWorkerLease).where(JobWorkerLease.id.in_(dead)))
    settled = 0
    for job_id, worker in interrupted:
        requeued = _requeue_or_fail(veil, job_id, worker)
        settled += requeued is not None
        if requeued:
            veil.job_queued(job_id)  # after the commit: the engine hands it to a worker
    return settled


def _interrupted(
    session: Session, oldest_alive: datetime
) -> tuple[set[str], list[tuple[str, str | None]]]:
    """The dead leases, and the running jobs that no live lease holds (with their worker)."""
    leases = list(session.scalars(select(JobWorkerLease)))
    dead = {lease.id for lease in leases if _dead(lease, oldest_alive)}
    alive = {lease.id for lease in leases} - dead
    running = session.execute(select(Job.id, Job.worker_id).where(Job.status == JobStatus.RUNNING))
    # A job running under a node's id (``node_...``) is the node's: it ends when the node
    # answers, or expires with its grant, never by a worker lease.
    return dead, [
        (job_id, worker)
        for job_id, worker in running
        if worker not in alive and not (worker or "").startswith("node_")
    ]


def _requeue_or_fail(veil: Veil, job_id: str, worker: str | None) -> bool | None:
    """Queue the job again (True) if it may run once more, else fail it (False); None when it
    is no longer running under that worker's claim (settled meanwhile)."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker_id != worker:
            return None
        if job.cancel_requested:
            job.status, job.error, job.finished_at = JobStatus.FAILED, CANCELLED, veil.clock()
        elif job.attempts < MAX_ATTEMPTS:
            job.status, job.worker_id, job.progress = JobStatus.QUEUED, None, None
        else:  # not the provider's doing: its debit comes back if no worker read its data
            fail_with_refund(session, job, INTERRUPTED, veil.clock(), {"attempts": job.attempts})
            return False
        again = job.status == JobStatus.QUEUED
        audit.record(
            session,
            "job.requeued" if again else "job.failed",
            outcome=audit.Outcome.FAILED,
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={"reason": REQUEUED if again else CANCELLED, "attempts": job.attempts},
        )
        return again


def requeue_unacknowledged(veil: Veil) -> int:
    """Queue again each job a node claimed but never acknowledged within ``HANDOVER_S``
    (its claim's answer went to a node that was away); how many.  It waits, is claimed
    again, or expires with its grant; a node that read the stale answer meanwhile gets the
    job as a replay when it is handed again (``node.work.jobs.take``: one run, one answer)."""
    now = veil.clock()
    stale = now - timedelta(seconds=HANDOVER_S)
    with veil.db.transaction() as session:
        jobs = list(
            session.scalars(
                select(Job)
                .where(
                    Job.status == JobStatus.RUNNING,
                    Job.worker_id.in_(select(Node.id)),
                    Job.node_taken_at.is_(None),
                    Job.started_at <= stale,
                )
                .with_for_update(skip_locked=True)
            )
        )
        for job in jobs:
            audit.record(session, "job.requeued", tenant_id=job.enterprise_id,
                         resource=f"job:{job.id}",
                         details={"node_id": job.worker_id,
                                  "reason": "the node did not acknowledge its claim"})  # fmt: skip
            job.status, job.worker_id = JobStatus.QUEUED, None
        return len(jobs)
