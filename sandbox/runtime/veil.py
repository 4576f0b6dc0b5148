"""The running service's core: settings, database, key service and clock, wired once.

``sandbox.service.open_veil`` builds the one :class:`Veil` that ``veil serve``, the demo
and the tests pass down to every request and job.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from keys import KeyService, key_operation
from policies import audit
from policies.db import utcnow
from sandbox.config.settings import Settings
from sandbox.isolation.pool import SandboxPool
from sandbox.runtime.wakeups import JobWakeups
from sandbox.store.database import Database
from sandbox.store.group_commit import GroupCommit


class JobQueue(Protocol):
    """Tells the engine that a job was queued (its row committed); ``sandbox.jobs.queue``
    has the engines."""

    def queued(self, job_id: str) -> None: ...

    def queued_all(self, job_ids: list[str]) -> None: ...

    def close(self) -> None: ...


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
    #: The engine's queue (``sandbox.jobs.queue``; None: the embedded worker's).
    queue: JobQueue | None = None
    #: This process's lease as a job worker (``sandbox.jobs.leases``), which its claims record.
    worker_id: str | None = None

    #: The nodes' waiting claims (``node_wakeup``): each an event in the API's event loop,
    #: set when something for the nodes is committed here (a job queued, a code request).
    _node_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(
        default_factory=set, repr=False
    )
    _node_waiters_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: The requests waiting for a job to end (``GET /v1/jobs/{id}?wait=``), woken by
    #: ``job_ended``.
    job_wakeups: JobWakeups = field(default_factory=JobWakeups, repr=False)
    #: Job submissions made at once, decided and written together (``sandbox.jobs.submit``).
    submissions: GroupCommit[Any, Any] = field(default_factory=GroupCommit, repr=False)

    def job_queued(self, job_id: str) -> None:
        """Hand a just-committed queued job to the engine (and wake nodes' claims)."""
        self.jobs_queued([job_id])

    def jobs_queued(self, job_ids: list[str]) -> None:
        """Hand just-committed queued jobs to the engine, all at once."""
        if not job_ids:
            return
        self.jobs_waiting.set()
        self.wake_nodes()
        if self.queue is not None:
            if len(job_ids) == 1:
                self.queue.queued(job_ids[0])
            else:
                self.queue.queued_all(job_ids)

    def job_ended(self, job_id: str) -> None:
        """Wake the requests waiting for ``job_id``: its end (released, failed, held) was
        just committed in this process."""
        self.job_wakeups.ended(job_id)

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
