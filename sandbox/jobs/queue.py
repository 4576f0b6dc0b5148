"""How queued jobs reach a worker: the engine chosen by ``VEIL_JOB_ENGINE``.

- ``embedded`` (the default, SQLite or PostgreSQL): a submission wakes the worker thread
  of its own server process (``sandbox.jobs.workers.JobWorker``); every server's worker also
  polls the ``jobs`` table, so a job queued by another process is found too.
- ``procrastinate`` (PostgreSQL only): a submission defers a procrastinate task naming the
  job on the same database; ``veil worker`` processes, on any number of machines, run
  procrastinate's worker (``sandbox.service.run_worker``), one job at a time each, in the
  isolated runner as always.
  Server processes then run no jobs.

The job's row is committed before its task is deferred.  A task lost in between (the
process died, the database blinked) is deferred again by the workers' upkeep
(:func:`requeue_lost`); a task for a job that is no longer queued does nothing.  The
``jobs`` row stays the truth: a job runs once, whatever procrastinate delivers.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import make_url, text

from sandbox.config.settings import Settings
from sandbox.runtime.veil import JobQueue, Veil

if TYPE_CHECKING:
    import procrastinate

log = logging.getLogger(__name__)

QUEUE: Final = "veil-jobs"
RUN_JOB: Final = "veil.run_job"
#: A queued job whose task is missing for this long is deferred again.
REQUEUE_AFTER_S: Final = 10.0


def conninfo(database_url: str) -> str:
    """libpq's form of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://...``)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def procrastinate_app(settings: Settings, *, sync: bool) -> procrastinate.App:
    """A procrastinate App on Veil's database (``sync``: for deferring from threads)."""
    import procrastinate

    assert settings.database_url is not None  # Settings refuses the engine without one
    info = conninfo(settings.database_url)
    if sync:
        connector = procrastinate.SyncPsycopgConnector(conninfo=info, min_size=1, max_size=2)
        return procrastinate.App(connector=connector)
    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=info, min_size=1, max_size=2)
    )


class ProcrastinateQueue:
    """Defers one procrastinate task per queued job (one task per job at a time)."""

    def __init__(self, settings: Settings) -> None:
        self._app = procrastinate_app(settings, sync=True)
        self._app.open()  # its pool is thread-safe: the API's threads defer at once

    def queued(self, job_id: str) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        task = self._app.configure_task(RUN_JOB, queue=QUEUE, queueing_lock=job_id)
        try:
            task.defer(job_id=job_id)
        except AlreadyEnqueued:
            pass
        except Exception:  # the job stays queued: the workers' upkeep defers it again
            log.warning(
                "job %s queued but its task not deferred; it will be", job_id, exc_info=True
            )

    def queued_all(self, job_ids: list[str]) -> None:
        """One task per job, all deferred in one statement (each with its own queueing
        lock); one by one if that fails (a job's task already there)."""
        jobs = [
            self._app.configure_task(RUN_JOB, queue=QUEUE, queueing_lock=job_id).make_new_job(
                job_id=job_id
            )
            for job_id in job_ids
        ]
        try:
            self._app.job_manager.batch_defer_jobs(jobs=jobs)
        except Exception:  # each alone, and each alone says what failed
            for job_id in job_ids:
                self.queued(job_id)

    def close(self) -> None:
        self._app.close()


def open_queue(settings: Settings) -> JobQueue | None:
    """The engine's queue for this process (None: the embedded worker polls the table)."""
    return ProcrastinateQueue(settings) if settings.job_engine == "procrastinate" else None


# A task being done ('doing') for a job still queued this long after its submission belongs
# to a worker that died before claiming it: only a waiting task ('todo') counts.
_LOST = text(
    "SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.created_at < :before "
    "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p WHERE p.queueing_lock = j.id "
    "AND p.status = 'todo') ORDER BY j.created_at LIMIT 1000"
)


def requeue_lost(veil: Veil) -> int:
    """Defer again the tasks of queued jobs that have none (see the module)."""
    if veil.queue is None:
        return 0
    before = veil.clock() - timedelta(seconds=REQUEUE_AFTER_S)
    with veil.db.read() as session:
        lost = list(session.scalars(_LOST, {"before": before.replace(tzinfo=None)}))
    for job_id in lost:
        veil.queue.queued(job_id)
    if lost:
        log.warning("deferred again the tasks of %d queued job(s)", len(lost))
    return len(lost)
