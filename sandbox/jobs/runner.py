"""Running queued jobs: claim, re-check, decrypt in memory, compute, check again, release.

The embedded worker is a thread of the server process.  A claimed job is
re-decided against its grant as it is *now* (revoked, expired or narrowed
grants stop it, budget aside: it was paid at submission), the data is
decrypted into memory only and handed over a pipe to a bubblewrap sandbox
(``sandbox.isolation.pool``), where the analytics engine computes a safe output;
the grant is checked once more in the transaction that releases it.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from analytics.schema import DatasetSchema
from keys import KeyServerUnavailable
from policies import audit
from policies.grants import Grant
from policies.principals import Principal
from sandbox.data.cell_secrets import cell_secret
from sandbox.data.datasets import rounded_count, schema_from_json
from sandbox.data.objects import Decrypting, read_all
from sandbox.isolation.pool import SandboxCancelled, SandboxError, SandboxPool, SandboxProcess
from sandbox.jobs.code_runs import run_code_job
from sandbox.jobs.kinds import RunInputs, kind_for, parse_stored
from sandbox.jobs.outcomes import (
    CANCELLED,
    checked_output,
    fail_running,
    finish_code_job,
    release,
    still_allowed,
)
from sandbox.jobs.progress import JobProgress
from sandbox.jobs.refunds import ClaimLost, data_read_marker
from sandbox.jobs.suspension import fail_jobs_of_suspended
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, Dataset, DatasetVersion, Job, JobStatus

log = logging.getLogger(__name__)

# Jobs on datasets held on an enterprise's node are that node's to run (``sandbox.nodes``):
# the control plane has neither their data nor a key to it.
_ON_NODES = select(Dataset.id).where(Dataset.node_id.is_not(None))


def claim_next_job(veil: Veil) -> str | None:
    """Atomically move the oldest queued job to running for this worker; return its id.

    Queued jobs of a suspended provider (submitted as the suspension committed)
    end failed first, audited: they are never run.
    """
    with veil.db.transaction() as session:
        fail_jobs_of_suspended(session, veil.clock())
        # PostgreSQL: another worker's claim in flight is skipped, not waited for (SQLite
        # ignores the clause; its writers take turns anyway).
        oldest = (
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED, Job.dataset_id.not_in(_ON_NODES))
            .order_by(Job.created_at)
        )
        job_id = session.scalar(oldest.limit(1).with_for_update(skip_locked=True))
        if job_id is None:
            return None
        return job_id if _claim(veil, session, job_id) else None


def claim_job(veil: Veil, job_id: str) -> bool:
    """Move the queued job ``job_id`` to running for this worker (False: it is not queued:
    another worker has it, or it was cancelled or failed meanwhile)."""
    with veil.db.transaction() as session:
        fail_jobs_of_suspended(session, veil.clock())
        return _claim(veil, session, job_id)


def _claim(veil: Veil, session: Session, job_id: str) -> bool:
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.dataset_id.not_in(_ON_NODES))
        .values(
            status=JobStatus.RUNNING,
            # A job queued again after its worker died keeps its first start: the key
            # server's audit explains every unwrap of its data by the run's window.
            started_at=func.coalesce(Job.started_at, veil.clock()),
            worker_id=veil.worker_id,
            attempts=Job.attempts + 1,
        )
    )
    return bool(claimed.rowcount == 1)


def run_job(veil: Veil, job_id: str) -> None:
    """Run a claimed job to ``released`` or ``failed``.

    The job's stored query is parsed exactly once, here (``parse_stored``); the re-check,
    the task and the release all use that parse.
    """
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        if job.status != JobStatus.RUNNING or job.worker_id != veil.worker_id:
            return  # this worker was taken for dead meanwhile: the job is not its own now
        kind, query = kind_for(job.tier), parse_stored(job)
        refused = still_allowed(veil, session, job, query)
        dataset = session.get(Dataset, job.dataset_id)
        enterprise = session.get(Principal, job.enterprise_id)
        version = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == job.dataset_id,
                DatasetVersion.version == job.dataset_version,
            )
        )
        grant = session.get(Grant, job.grant_id)
        code = None if refused else kind.code_request(session, query)
    if refused:
        fail_running(
            veil,
            job_id,
            "the grant no longer allows this job: " + "; ".join(refused),
            audit.Outcome.DENIED,
        )
        return
    assert dataset and enterprise and enterprise.slug and version and grant
    inputs = _inputs(veil, job, grant, version, schema_from_json(dataset.declaration), code)
    task = kind.task(query, inputs)
    progress = JobProgress(veil, job_id, task)
    sandbox: SandboxProcess | None = None
    try:
        if kind.needs_cell_secret(inputs):
            # The dataset's cell-key secret, made on first need: tier 2 perturbs its cells
            # with it, tier 5 the aggregates it releases.
            secret = cell_secret(veil, dataset, enterprise.slug, version.version, job_id)
            task = kind.with_cell_secret(task, secret)
        else:
            secret = None
        data = Decrypting(
            veil,
            enterprise.slug,
            f"dataset:{version.dataset_id}",
            version.version,
            version.wrapped_key,
            version.object_path,
            on_unwrapped=data_read_marker(veil, job_id),  # from here on, no refund
        )
        if code is not None:
            # Tier 5 runs code that is not Veil's: sandboxes of its own, used once, holding
            # only the granted columns (sandbox.jobs.code_runs).
            checked = run_code_job(
                veil, task, read_all(data), inputs.schema, grant.min_group_size, progress,
                secret, code.reference,
            )  # fmt: skip
            finish_code_job(veil, job_id, checked, enterprise.slug, query)
            return
        sandbox = (veil.sandboxes or SandboxPool(veil.settings, warm=False)).take()
        # Decrypted as it is sent: this process never holds the whole plaintext.
        answer = sandbox.run(task, data, progress.on_progress, progress.should_stop)
        output = checked_output(veil, enterprise, job_id, kind, answer)
    except SandboxCancelled:
        fail_running(veil, job_id, CANCELLED, audit.Outcome.FAILED)
        return
    except Exception as exc:
        if sandbox is not None:
            sandbox.finish()
        if not progress.cancelled():
            _fail_for(veil, job_id, exc)
            return
        # Asked to stop, the job ended otherwise first (e.g. its process answered an error
        # while being stopped): the cancellation is what the provider must read.
        fail_running(veil, job_id, CANCELLED, audit.Outcome.FAILED)
        return
    try:
        release(veil, job_id, output, query)
    finally:
        sandbox.finish()  # the job process's exit: after the release, not in its latency


def _fail_for(veil: Veil, job_id: str, exc: Exception) -> None:
    """Fail a job with the reason its error gives the provider (never a data value).

    None of these is the provider's doing: a job that read none of its data gets its debit
    back.  Whether it read any is the job's own record (``sandbox.jobs.refunds``), never guessed
    from the error.
    """
    if isinstance(exc, ClaimLost):
        return  # taken back from this worker before it read anything: not ours to settle
    if isinstance(exc, SandboxError):
        reason = exc.reason
    elif isinstance(exc, KeyServerUnavailable):
        reason = "the key server is unavailable"
    else:
        log.error("job %s failed", job_id, exc_info=exc)
        reason = "internal error while computing the result"
    fail_running(veil, job_id, reason, refund_unread=True)


def _inputs(
    veil: Veil,
    job: Job,
    grant: Grant,
    version: DatasetVersion,
    schema: DatasetSchema,
    code: CodeRequest | None,
) -> RunInputs:
    """What the job's kind builds its task from (the task is checked here, in the parent)."""
    return RunInputs(
        schema=schema,
        epsilon=job.cost.epsilon,
        delta=job.cost.delta,
        rows_public=rounded_count(version.row_count),
        min_count=grant.min_group_size,
        secure_mode=veil.settings.training_secure_mode,
        code=code,
    )
