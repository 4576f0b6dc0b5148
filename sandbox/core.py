"""The running service's core: settings, database, key service and clock, wired once.

``open_veil`` is what ``veil serve``, the demo and the tests use to start
everything (key server, database migration, job worker) and stop it again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from keys import KeyService, LocalKeyServer, key_operation
from policies import audit
from policies.db import utcnow
from policies.principals import Principal, Role, create_principal, issue_token
from sandbox.database import Database, migrate
from sandbox.datadir import prepare_data_dir
from sandbox.isolation import SandboxPool
from sandbox.keyserver import KeyOutageAudit
from sandbox.settings import Settings

if TYPE_CHECKING:
    from sandbox.job_queue import JobQueue


@dataclass
class Veil:
    """Everything a request or a job needs; built once at start-up and passed down."""

    settings: Settings
    db: Database
    keys: KeyService
    clock: Callable[[], datetime] = utcnow
    #: Set when a job is queued, so the worker need not wait for its next poll.
    jobs_waiting: threading.Event = field(default_factory=threading.Event)
    #: The job worker's sandboxes (None: each job starts its own, nothing kept warm).
    sandboxes: SandboxPool | None = None
    #: The job worker's tier-5 sandboxes: single-use, one spare kept with PySyft imported.
    code_sandboxes: SandboxPool | None = None
    #: The engine's queue (``sandbox.job_queue``; None: the embedded worker's).
    queue: JobQueue | None = None
    #: This process's lease as a job worker (``sandbox.leases``), which its claims record.
    worker_id: str | None = None

    #: The nodes' waiting claims (``node_wakeup``): each an event in the API's event loop,
    #: set when something for the nodes is committed here (a job queued, a code request).
    _node_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(
        default_factory=set, repr=False
    )
    _node_waiters_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def job_queued(self, job_id: str) -> None:
        """Hand a just-committed queued job to the engine (and wake nodes' claims)."""
        self.jobs_waiting.set()
        self.wake_nodes()
        if self.queue is not None:
            self.queue.queued(job_id)

    def wake_nodes(self) -> None:
        """Wake the nodes' waiting claims: something for them was just committed."""
        with self._node_waiters_lock:
            waiters = list(self._node_waiters)
        for loop, event in waiters:
            with suppress(RuntimeError):  # its loop closed: the claim is gone
                loop.call_soon_threadsafe(event.set)

    @contextmanager
    def node_wakeup(self) -> Iterator[asyncio.Event]:
        """An event ``wake_nodes`` sets, for a claim waiting in the running event loop (a
        long poll holds no thread while it waits)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._node_waiters_lock:
            self._node_waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._node_waiters_lock:
                self._node_waiters.discard(entry)

    def checkpoint(self) -> audit.AuditCheckpoint | None:
        """Sign the audit chain's head now (no-op when nothing new was logged)."""
        with self.db.transaction() as session:
            head = session.get(audit.AuditHead, 1)
            # The key server's log names what was signed (``veil audit keys`` explains it).
            with key_operation(f"checkpoint:{head.seq if head else 0}/1"):
                return audit.checkpoint(session, self.keys.sign)


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
def open_veil(settings: Settings, *, worker: bool = True) -> Iterator[Veil]:
    """Start the key server (embedded or external), migrate the database, fail the jobs of
    dead workers, and run the embedded job worker (``worker`` and ``VEIL_JOB_ENGINE`` is
    ``embedded``) and the auditing of key-server outages (``KeyOutageAudit``)."""
    from sandbox.job_queue import open_queue
    from sandbox.leases import WorkerLease, recover_interrupted_jobs
    from sandbox.workers import JobWorker

    prepare_data_dir(settings.data_dir)
    local = LocalKeyServer(settings.keyserver_home) if settings.embedded_key_server else None
    owns_server = local is not None and not local.is_running()
    config = local.start() if local is not None else settings.external_key_server()
    db: Database | None = None
    queue: JobQueue | None = None
    lease: WorkerLease | None = None
    job_worker: JobWorker | None = None
    outages: KeyOutageAudit | None = None
    try:
        keys = KeyService.connect(config)
        migrate(settings.db_url)
        db = Database(settings.db_url, pool_size=settings.database_pool_size)
        queue = open_queue(settings)
        veil = Veil(settings=settings, db=db, keys=keys, queue=queue)
        outages = KeyOutageAudit(db, veil.clock)
        keys.on_unavailable(outages.seen)
        outages.start()
        recover_interrupted_jobs(veil)
        if worker and settings.job_engine == "embedded":
            lease = WorkerLease(veil)
            lease.start()
            job_worker = JobWorker(veil)
            job_worker.start()
        yield veil
    finally:
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
