"""How ``GET /v1/jobs/{id}?wait=S`` waits for a job to end, holding no server thread.

The request waits in the event loop on an event that this process sets when it records the
job's end (``Veil.job_ended``: the embedded worker's release or failure, a node's answer),
and between times reads the job's status again (one row by its key, in the thread pool): a
job that another process ends (``veil worker``, another API process) is seen there.  The
re-reads come soon at first and then less often (50 ms, growing by half each time, at most
one a second), so a short job is answered soon after its end and a long wait costs about
one read a second.  The route checks the caller before and again after the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus

#: The longest ``wait`` a request may ask for, in seconds.
MAX_WAIT_S: Final = 30.0
#: The statuses a waiting request waits out; any other ends the wait (released, failed,
#: denied, or held for the enterprise: the job's run is over).
IN_PROGRESS: Final = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
FIRST_LOOK_S: Final = 0.05
LOOK_GROWTH: Final = 1.5
LONGEST_LOOK_S: Final = 1.0


def _in_progress(veil: Veil, job_id: str) -> bool:
    with veil.db.read() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) in IN_PROGRESS


async def until_ended(
    veil: Veil,
    job_id: str,
    principal_id: str,
    seconds: float,
    gone: Callable[[], Awaitable[bool]],
) -> bool:
    """Wait until ``job_id`` is no longer queued or running, ``seconds`` pass, or the client
    is ``gone``; False at once (nothing waited) when ``principal_id`` has as many requests
    waiting as it may (``sandbox.runtime.wakeups``)."""
    deadline = time.monotonic() + seconds
    pause = FIRST_LOOK_S
    with veil.job_wakeups.waiting(job_id, principal_id) as woken:
        if woken is None:
            return False
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=min(pause, left))
            if woken.is_set() or await gone():
                break
            if not await run_in_threadpool(_in_progress, veil, job_id):
                break
            pause = min(pause * LOOK_GROWTH, LONGEST_LOOK_S)
    return True
