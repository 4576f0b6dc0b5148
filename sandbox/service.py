"""The running service, started and stopped: the key server, the database, the job worker.

``open_veil`` is what ``veil serve``, the demo and the tests use to start everything (key
server, database migration, job worker) and stop it again; ``run_worker`` is the
``veil worker`` process (``VEIL_JOB_ENGINE=procrastinate``); ``bootstrap_operator`` creates
the first operator (``veil init``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from keys import KeyService, LocalKeyServer
from policies import audit
from policies.principals import Principal, Role, create_principal, issue_token
from sandbox.config.datadir import prepare_data_dir
from sandbox.config.settings import Settings
from sandbox.isolation.pool import SandboxPool
from sandbox.jobs.leases import WorkerLease, recover_interrupted_jobs
from sandbox.jobs.queue import QUEUE, RUN_JOB, open_queue, procrastinate_app, requeue_lost
from sandbox.jobs.reencryption import check_profile
from sandbox.jobs.runner import claim_job, run_job
from sandbox.jobs.workers import JobWorker, Upkeep, close_pools, open_pools
from sandbox.runtime.keyserver import KeyOutageAudit
from sandbox.runtime.veil import JobQueue, Veil
from sandbox.sources.scheduler import SourceScheduler
from sandbox.store.database import Database, migrate

if TYPE_CHECKING:
    import procrastinate

log = logging.getLogger(__name__)


def bootstrap_operator(veil: Veil, name: str = "operator") -> str | None:
    """Create the first operator and return its one-time token; None if one exists already."""
    with veil.db.transaction() as session:
        if session.query(Principal).filter_by(role=Role.OPERATOR).first() is not None:
            return None
        operator = create_principal(session, Role.OPERATOR, name)
        lifetime = timedelta(days=veil.settings.token_ttl_days)
        issued = issue_token(session, operator, lifetime=lifetime, now=veil.clock())
        audit.record(
            session,
            "operator.created",
            resource=f"principal:{operator.id}",
            details={
                "name": operator.name,
                "via": "veil init",
                "token_id": issued.record.id,
                "token_expires_at": issued.record.expires_at.isoformat(),
            },
        )
        return issued.secret


@contextmanager
def open_veil(
    settings: Settings, *, worker: bool = True, profile_check: bool = True
) -> Iterator[Veil]:
    """Start the key server (embedded or external), migrate the database, check the crypto
    profile (``sandbox.jobs.reencryption.check_profile``, unless ``profile_check`` is false:
    the migration itself), fail the jobs of dead workers, and run the embedded job worker
    (``worker`` and ``VEIL_JOB_ENGINE`` is ``embedded``), with the scheduler of data sources
    (``sandbox.sources.scheduler``), and the auditing of key-server outages
    (``KeyOutageAudit``)."""
    prepare_data_dir(settings.data_dir)
    local = LocalKeyServer(settings.keyserver_home) if settings.embedded_key_server else None
    owns_server = local is not None and not local.is_running()
    config = local.start() if local is not None else settings.external_key_server()
    db: Database | None = None
    queue: JobQueue | None = None
    lease: WorkerLease | None = None
    job_worker: JobWorker | None = None
    sources: SourceScheduler | None = None
    outages: KeyOutageAudit | None = None
    try:
        keys = KeyService.connect(config, profile=settings.crypto_profile)
        migrate(settings.db_url)
        db = Database(settings.db_url, pool_size=settings.database_pool_size)
        queue = open_queue(settings)
        veil = Veil(settings=settings, db=db, keys=keys, queue=queue)
        outages = KeyOutageAudit(db, veil.clock)
        keys.on_unavailable(outages.seen)
        outages.start()
        if profile_check:
            check_profile(veil)
        recover_interrupted_jobs(veil)
        if worker and settings.job_engine == "embedded":
            lease = WorkerLease(veil)
            lease.start()
            job_worker = JobWorker(veil)
            job_worker.start()
            sources = SourceScheduler(veil)
            sources.start()
        yield veil
    finally:
        if sources is not None:
            sources.stop()
        if job_worker is not None:
            job_worker.stop()
        if lease is not None:
            lease.stop()
        if outages is not None:
            outages.stop()
        if queue is not None:
            queue.close()
        if db is not None:
            db.dispose()
        if local is not None and owns_server:
            local.stop()


#: How often the worker looks at its stop flag while procrastinate's worker runs.
STOP_POLL_S = 0.25


def run_worker(settings: Settings) -> None:
    """``veil worker``: run procrastinate's worker on this machine until SIGINT/SIGTERM.

    The signal only sets a flag (an exception raised from a signal handler could land
    anywhere, even where Python ignores it): the worker stops at its next step while
    starting, or procrastinate's worker is stopped gracefully (its running job finished
    first) once it runs; whatever had started stops after, its lease given up.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _run_worker(settings, stop)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run_worker(settings: Settings, stop: threading.Event) -> None:
    with open_veil(settings, worker=False) as veil, contextlib.ExitStack() as stopping:
        lease = WorkerLease(veil)
        lease.start()
        stopping.callback(lease.stop)  # callbacks run last first: upkeep, jobs, lease
        jobs = _JobThread(veil)
        stopping.callback(jobs.close)
        upkeep = _UpkeepThread(veil, Upkeep(veil), lambda: requeue_lost(veil))
        upkeep.start()
        stopping.callback(upkeep.stop)
        sources = SourceScheduler(veil)
        sources.start()
        stopping.callback(sources.stop)
        if stop.is_set():
            log.info("veil worker stopped while starting")
            return
        app = procrastinate_app(settings, sync=False)

        def one_job(job_id: str) -> None:
            if claim_job(veil, job_id):
                run_job(veil, job_id)

        @app.task(name=RUN_JOB, queue=QUEUE)
        async def run_job_task(job_id: str) -> None:
            await asyncio.get_running_loop().run_in_executor(jobs.executor, one_job, job_id)

        log.info("veil worker %s waiting for jobs", lease.id)
        asyncio.run(_work(app, lease.id, stop))


async def _work(app: procrastinate.App, name: str, stop: threading.Event) -> None:
    """Procrastinate's worker until ``stop`` is set, then stopped gracefully (cancelling
    it lets its running job finish)."""
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=name,
                concurrency=1,  # one job at a time: it has the worker's sandbox and memory
                delete_jobs="successful",
                install_signal_handlers=False,  # ours set the flag
            )
        )
        while not stop.is_set() and not worker.done():
            await asyncio.wait({worker}, timeout=STOP_POLL_S)
        if not worker.done():
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


class _JobThread:
    """The one thread that runs this worker's jobs and owns its warm sandbox (bubblewrap's
    --die-with-parent binds a sandbox to the thread that started it)."""

    def __init__(self, veil: Veil) -> None:
        self.veil = veil
        self.pools: tuple[SandboxPool, ...] = ()
        self.executor = ThreadPoolExecutor(1, "veil-job", initializer=self._prepare)
        self.executor.submit(lambda: None)  # starts the thread: the sandbox warms up now

    def _prepare(self) -> None:
        self.pools = open_pools(self.veil)

    def close(self) -> None:
        self.executor.submit(lambda: close_pools(self.veil, self.pools)).result(timeout=60)
        self.executor.shutdown()


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
