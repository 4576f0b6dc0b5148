"""Requests waiting in the API's event loop for a job to end (``GET /v1/jobs/{id}?wait=``),
and the in-process wake-up that ends their wait early.

A waiting request holds no thread: it waits on an :class:`asyncio.Event` in its event loop.
Whatever records a job's end in this process (``sandbox.jobs.outcomes``, a node's release)
calls :meth:`JobWakeups.ended` from its own thread once the outcome is committed; jobs ended
by other processes (``veil worker``, another API process) are seen by the waiting request's
own re-reads.  Each principal may have :data:`MAX_WAITS_PER_PRINCIPAL` requests waiting in
one process; ``waiting`` refuses more (the request is then answered at once).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Final

#: Requests one principal may have waiting for jobs in one API process at a time.
MAX_WAITS_PER_PRINCIPAL: Final = 8

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class JobWakeups:
    """The requests of this process waiting for jobs to end: woken from any thread."""

    def __init__(self, per_principal: int = MAX_WAITS_PER_PRINCIPAL) -> None:
        self.per_principal = per_principal
        self._lock = threading.Lock()
        self._by_job: dict[str, set[_Waiter]] = {}
        self._by_principal: Counter[str] = Counter()

    @contextmanager
    def waiting(self, job_id: str, principal_id: str) -> Iterator[asyncio.Event | None]:
        """An event :meth:`ended` sets for ``job_id``, in the running event loop; None when
        ``principal_id`` already has ``per_principal`` requests waiting (nothing registered)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            admitted = self._by_principal[principal_id] < self.per_principal
            if admitted:
                self._by_principal[principal_id] += 1
                self._by_job.setdefault(job_id, set()).add(waiter)
        if not admitted:
            yield None
            return
        try:
            yield waiter[1]
        finally:
            with self._lock:
                self._by_principal[principal_id] -= 1
                if not self._by_principal[principal_id]:
                    del self._by_principal[principal_id]
                waiters = self._by_job.get(job_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._by_job[job_id]

    def ended(self, job_id: str) -> None:
        """Wake the requests waiting for ``job_id``: its end was just committed (any thread)."""
        with self._lock:
            waiters = list(self._by_job.get(job_id, ()))
        for loop, event in waiters:
            with suppress(RuntimeError):  # its loop closed: the request is gone
                loop.call_soon_threadsafe(event.set)

    def count(self) -> int:
        """How many requests are waiting now (all principals)."""
        with self._lock:
            return sum(self._by_principal.values())
