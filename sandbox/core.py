"""The running service's core: settings, database, key service and clock, wired once.

``open_veil`` is what ``veil serve``, the demo and the tests use to start
everything (key server, database migration, job worker) and stop it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from keys import KeyService, LocalKeyServer
from policies import audit
from policies.db import utcnow
from policies.principals import Principal, Role, create_principal, issue_token
from sandbox.database import Database, migrate
from sandbox.isolation import SandboxPool
from sandbox.keyserver import KeyOutageAudit
from sandbox.settings import Settings


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

    def checkpoint(self) -> audit.AuditCheckpoint | None:
        """Sign the audit chain's head now (no-op when nothing new was logged)."""
        with self.db.transaction() as session:
            return audit.checkpoint(session, self.keys.sign)


def bootstrap_operator(veil: Veil, name: str = "operator") -> str | None:
    """Create the first operator and return its one-time token; None if one exists already."""
    with veil.db.transaction() as session:
        if session.query(Principal).filter_by(role=Role.OPERATOR).first() is not None:
            return None
        operator = create_principal(session, Role.OPERATOR, name)
        token = issue_token(session, operator)
        audit.record(
            session,
            "operator.created",
            resource=f"principal:{operator.id}",
            details={"name": operator.name, "via": "veil init"},
        )
        return token


@contextmanager
def open_veil(settings: Settings, *, worker: bool = True) -> Iterator[Veil]:
    """Start the key server (embedded or external), migrate the database, run the job worker
    and the auditing of key-server outages (``KeyOutageAudit``)."""
    from sandbox.runner import JobWorker, recover_interrupted_jobs

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    local = LocalKeyServer(settings.keyserver_home) if settings.embedded_key_server else None
    owns_server = local is not None and not local.is_running()
    config = local.start() if local is not None else settings.external_key_server()
    db: Database | None = None
    job_worker: JobWorker | None = None
    outages: KeyOutageAudit | None = None
    try:
        keys = KeyService.connect(config)
        migrate(settings.db_url)
        db = Database(settings.db_url, pool_size=settings.database_pool_size)
        veil = Veil(settings=settings, db=db, keys=keys)
        outages = KeyOutageAudit(db, veil.clock)
        keys.on_unavailable(outages.seen)
        outages.start()
        recover_interrupted_jobs(veil)
        if worker:
            job_worker = JobWorker(veil)
            job_worker.start()
        yield veil
    finally:
        if job_worker is not None:
            job_worker.stop()
        if outages is not None:
            outages.stop()
        if db is not None:
            db.dispose()
        if local is not None and owns_server:
            local.stop()
