"""OS processes for the PostgreSQL tests: what each runs (importable when spawned), and
:func:`run_processes`, which starts them and says why one failed.

A worker's exception comes back as its traceback on the results queue, so a failure
names its cause instead of only an exit status; and the moment one worker fails, the
others' start barrier is broken, so no test sits out a timeout for a worker that is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from keys import KeyServerConfig, KeyService
from keys.vault import KeyServerClient
from policies import audit
from policies.db import new_id
from policies.grants import Grant, debit
from sandbox.config.settings import Settings
from sandbox.jobs.runner import claim_next_job
from sandbox.runtime.veil import Veil
from sandbox.store.database import Database

#: How long all the workers together may take, start-up included.  Starting one costs a
#: fresh interpreter importing Veil (1.5 s on an idle core; several times that on two
#: loaded cores), so the start barrier waits on the parent (it breaks the barrier when a
#: worker fails or this runs out) rather than on a timeout of its own.
DEADLINE_S = 240.0


@dataclass(frozen=True)
class Outcome:
    """What one worker process reports: its return value, or why it failed."""

    index: int
    value: Any = None
    error: str | None = None
    started_s: float = 0.0  # from the process's start to the work's (imports included)


def _report(
    index: int,
    out: Queue[Outcome],
    started: float,
    work: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """The spawned process's target: run ``work(*args)``, put its :class:`Outcome` on ``out``."""
    ready = time.time() - started
    try:
        value = work(*args)
    except BaseException:
        error = f"worker {index} (pid {os.getpid()}, started in {ready:.1f} s): "
        out.put(Outcome(index, error=error + traceback.format_exc(), started_s=ready))
        raise
    out.put(Outcome(index, value=value, started_s=ready))


def run_processes(
    work: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    barrier: bool = True,
    deadline_s: float = DEADLINE_S,
    while_running: Callable[[], None] | None = None,
) -> list[Any]:
    """Run ``work`` in one spawned process per entry of ``args``; their return values, in order.

    With ``barrier``, each gets a start barrier as its first argument (all start their
    work together).  ``while_running`` is called over and over until every worker reported.
    Any worker's failure fails the test with the worker's traceback.
    """
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(len(args)) if barrier else None
    out: Queue[Outcome] = spawn.Queue()
    processes = [
        spawn.Process(
            target=_report,
            args=(i, out, time.time(), work, ((start, *a) if start else a)),
            name=f"{work.__name__}-{i}",
        )
        for i, a in enumerate(args)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, Outcome] = {}
    ended_unreported: dict[int, float] = {}
    ends = time.monotonic() + deadline_s
    try:
        while len(outcomes) < len(processes):
            if while_running is not None:
                while_running()
            try:
                outcome = out.get(timeout=0.02 if while_running else 1.0)
            except queue.Empty:
                _check_alive(processes, outcomes, ended_unreported)
                if time.monotonic() > ends:
                    missing = [p.name for i, p in enumerate(processes) if i not in outcomes]
                    raise AssertionError(
                        f"{missing} did not finish within {deadline_s:.0f} s"
                    ) from None
                continue
            outcomes[outcome.index] = outcome  # in the order they came: the first failure first
            if outcome.error is not None and start is not None:
                start.abort()  # the others stop waiting for it
        failed = [o.error for o in outcomes.values() if o.error is not None]
        if failed:
            raise AssertionError("worker processes failed:\n" + "\n".join(failed))
    finally:
        if start is not None:
            start.abort()  # harmless once all have passed it; frees any still waiting
        _end(processes)
    return [outcomes[i].value for i in range(len(processes))]


def _check_alive(
    processes: list[Any], outcomes: dict[int, Outcome], ended_unreported: dict[int, float]
) -> None:
    """Fail when a worker ended without reporting (killed, or failed while unpickling its
    target, before it could report).  A worker reports before it ends, but its report may
    still be in the queue's pipe for a moment."""
    now = time.monotonic()
    for i, process in enumerate(processes):
        if i in outcomes or process.exitcode is None:
            continue
        if now - ended_unreported.setdefault(i, now) > 5:
            status = process.exitcode
            raise AssertionError(f"{process.name} exited with status {status}, unreported")


def _end(processes: list[Any]) -> None:
    for process in processes:
        process.join(10)
        if process.exitcode is None:
            process.kill()
            process.join(5)


def debit_and_audit(start: Barrier, url: str, grant_id: str, attempts: int, units: int) -> int:
    """Try ``attempts`` debits of ``units`` ε, each audited in its own transaction, as a job
    submission does; how many were granted."""
    db = Database(url)
    granted = 0
    try:
        start.wait(DEADLINE_S)  # in case the parent is gone; it breaks the barrier itself
        for _ in range(attempts):
            job_id = new_id("job")
            with db.transaction() as session:
                grant = session.get(Grant, grant_id)
                assert grant is not None
                ok = debit(session, grant, job_id, units, 0)
                audit.record(
                    session,
                    "budget.debited" if ok else "job.denied",
                    outcome=audit.Outcome.OK if ok else audit.Outcome.DENIED,
                    tenant_id=grant.enterprise_id,
                    resource=f"grant:{grant_id}",
                    details={"job_id": job_id, "epsilon_units": units},
                )
            granted += ok
    finally:
        db.dispose()
    return granted


def append_events(start: Barrier, url: str, count: int) -> int:
    """Append ``count`` events, one per transaction, a few milliseconds apart; how many."""
    db = Database(url)
    try:
        start.wait(DEADLINE_S)
        for i in range(count):
            with db.transaction() as session:
                audit.record(session, "test.event", details={"pid": os.getpid(), "i": i})
            time.sleep(0.005)
    finally:
        db.dispose()
    return count


def claim_all(start: Barrier, url: str, config: KeyServerConfig, data_dir: Path) -> list[str]:
    """Claim queued jobs as a job worker does, until none is left; the ids claimed.

    Claims touch only the database, so the key service is not connected: connecting also
    creates Veil's platform keys when the key server has none yet, and four processes
    doing that at once on the session's fresh server raced ("path is already in use" in
    one, which left the others waiting at the barrier until it timed out).
    """
    db = Database(url)
    veil = Veil(
        settings=Settings(data_dir=data_dir), db=db, keys=KeyService(KeyServerClient(config))
    )
    claimed: list[str] = []
    try:
        start.wait(DEADLINE_S)
        while (job_id := claim_next_job(veil)) is not None:
            claimed.append(job_id)
    finally:
        db.dispose()
    return claimed


def submit_many(
    start: Barrier,
    url: str,
    config: KeyServerConfig,
    data_dir: Path,
    provider_id: str,
    dataset_id: str,
    threads: int,
    attempts: int,
    epsilon: float,
) -> int:
    """Submit ``attempts`` tier-3 counts of ``epsilon`` from each of ``threads`` threads, as
    the API's submission route does; how many were accepted (the others denied)."""
    from concurrent.futures import ThreadPoolExecutor

    from policies.errors import Denied
    from policies.principals import Principal
    from sandbox.jobs.submit import JobSubmission, submit_job

    db = Database(url)
    veil = Veil(
        settings=Settings(data_dir=data_dir), db=db, keys=KeyService(KeyServerClient(config))
    )
    sub = JobSubmission(
        dataset_id=dataset_id,
        purpose="process-optimization",
        query={"aggregates": [{"kind": "count"}]},
        epsilon=epsilon,
    )

    def submit(_: int) -> int:
        accepted = 0
        with db.read() as session:
            provider = session.get(Principal, provider_id)
        assert provider is not None
        for _ in range(attempts):
            try:
                submit_job(veil, provider, sub)
            except Denied:
                continue
            accepted += 1
        return accepted

    try:
        start.wait(DEADLINE_S)
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(submit, range(threads)))
    finally:
        db.dispose()
