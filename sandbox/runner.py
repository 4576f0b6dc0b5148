"""Running queued jobs: claim, re-check, decrypt in memory, compute, check again, release.

The embedded worker is a thread of the server process.  A claimed job is
re-decided against its grant as it is *now* (revoked, expired or narrowed
grants stop it, budget aside: it was paid at submission), the data is
decrypted into memory only, the analytics engine computes a safe output, and
the grant is checked once more in the transaction that releases it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from analytics.private_query import QueryRelease, run_private_query
from analytics.schema import PrivateQuery
from analytics.sdc import PriorCell, SdcRules, TableQuery, TableRelease, run_table_query
from analytics.training import TrainedModel, TrainingCancelled, TrainingSpec, train_model
from keys import KeyServerUnavailable
from policies import audit
from policies.decisions import JobRequest, decide
from policies.grants import DELTA_UNIT, EPSILON_UNIT, Grant
from policies.principals import Principal
from sandbox.artifacts import StoredArtifact, store_artifact
from sandbox.core import Veil
from sandbox.datasets import load_frame, rounded_count, schema_from_json
from sandbox.jobs import cancel_expired, columns_of, parse_job_query
from sandbox.models import Dataset, DatasetVersion, Job, JobStatus, ReleasedCell

log = logging.getLogger(__name__)


def claim_next_job(veil: Veil) -> str | None:
    """Atomically move the oldest queued job to running; return its id."""
    with veil.db.transaction() as session:
        job_id = session.scalar(
            select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.created_at).limit(1)
        )
        if job_id is None:
            return None
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=veil.clock())
        )
        return job_id if claimed.rowcount == 1 else None


def _fail(veil: Veil, job_id: str, reason: str, outcome: audit.Outcome) -> None:
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.error, job.finished_at = JobStatus.FAILED, reason, veil.clock()
        audit.record(
            session,
            "job.failed",
            outcome=outcome,
            tenant_id=job.enterprise_id,
            resource=f"job:{job.id}",
            details={"reason": reason},
        )


def _still_allowed(veil: Veil, session: Session, job: Job) -> tuple[str, ...]:
    """Reasons the job's grant no longer allows it (empty when it still does)."""
    grant = session.get(Grant, job.grant_id) if job.grant_id else None
    dataset = session.get(Dataset, job.dataset_id)
    if grant is None or dataset is None:
        return ("the grant or the dataset is gone",)
    schema = schema_from_json(dataset.declaration)
    query = parse_job_query(job.tier, job.query, job.epsilon / EPSILON_UNIT, job.delta / DELTA_UNIT)
    request = JobRequest(
        job.provider_id, job.dataset_id, job.purpose, job.tier, columns_of(query), 0, 0
    )  # already paid: only the terms are re-checked
    classes = {c.name: str(c.column_class) for c in schema.columns}
    return decide(request, classes, [grant], veil.clock()).reasons


def run_job(veil: Veil, job_id: str) -> None:
    """Run a claimed job to ``released`` or ``failed``."""
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.RUNNING
        refused = _still_allowed(veil, session, job)
        dataset = session.get(Dataset, job.dataset_id)
        enterprise = session.get(Principal, job.enterprise_id)
        version = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == job.dataset_id,
                DatasetVersion.version == job.dataset_version,
            )
        )
        grant = session.get(Grant, job.grant_id)
        prior = _prior_cells(session, job) if job.tier == 2 else []
    if refused:
        _fail(
            veil,
            job_id,
            "the grant no longer allows this job: " + "; ".join(refused),
            audit.Outcome.DENIED,
        )
        return
    assert dataset and enterprise and enterprise.slug and version and grant
    try:
        frame = load_frame(veil, enterprise.slug, version)
        context = _Context(veil, job, grant, version, prior)
        computed = _compute(context, schema_from_json(dataset.declaration), frame)
        del frame
        output: Released = (
            _stored(veil, enterprise, job_id, computed)
            if isinstance(computed, TrainedModel)
            else computed
        )
    except TrainingCancelled:
        _fail(
            veil,
            job_id,
            "cancelled: by the provider; the job's budget stays spent",
            audit.Outcome.FAILED,
        )
        return
    except KeyServerUnavailable:
        _fail(
            veil,
            job_id,
            "the key server is unavailable; the job's budget stays spent",
            audit.Outcome.FAILED,
        )
        return
    except Exception:
        log.exception("job %s failed", job_id)
        _fail(veil, job_id, "internal error while computing the result", audit.Outcome.FAILED)
        return
    _release(veil, job_id, output)


def _prior_cells(session: Session, job: Job) -> list[PriorCell]:
    rows = session.scalars(select(ReleasedCell).where(ReleasedCell.dataset_id == job.dataset_id))
    return [PriorCell(r.conditions, r.version == job.dataset_version, r.count) for r in rows]


@dataclass(frozen=True)
class _Context:
    veil: Veil
    job: Job
    grant: Grant
    version: DatasetVersion
    prior: list[PriorCell]


Output = QueryRelease | TableRelease | TrainedModel


def _compute(ctx: _Context, schema: Any, frame: Any) -> Output:
    job = ctx.job
    eps, delta = job.epsilon / EPSILON_UNIT, job.delta / DELTA_UNIT
    query = parse_job_query(job.tier, job.query, eps, delta)
    if isinstance(query, TableQuery):
        rules = SdcRules(min_count=ctx.grant.min_group_size)
        return run_table_query(frame, schema, query, rules, ctx.prior)
    if isinstance(query, TrainingSpec):
        progress = TrainingProgress(ctx.veil, job.id, query.epochs)
        return train_model(
            frame,
            schema,
            query,
            rounded_count(ctx.version.row_count),
            on_epoch=progress.on_epoch,
            should_stop=progress.should_stop,
            secure_mode=ctx.veil.settings.training_secure_mode,
        )
    assert isinstance(query, PrivateQuery)
    return run_private_query(frame, schema, query, eps, delta)


class TrainingProgress:
    """Reports epochs to the job row and polls the provider's cancel request (at most 2/s)."""

    def __init__(self, veil: Veil, job_id: str, epochs: int) -> None:
        self.veil, self.job_id, self.epochs = veil, job_id, epochs
        self._checked = 0.0
        self._stop = False

    def on_epoch(self, epoch: int, loss: float) -> None:
        with self.veil.db.transaction() as session:
            job = session.get(Job, self.job_id)
            assert job is not None
            job.progress = {
                "epoch": epoch,
                "epochs": self.epochs,
                "loss": loss,
                "at": self.veil.clock().isoformat(),
            }

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._checked >= 0.5:
            self._checked = now
            with self.veil.db.transaction() as session:
                self._stop = bool(
                    session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
                )
        return self._stop


@dataclass(frozen=True)
class _StoredModel:
    model: TrainedModel
    artifact: StoredArtifact


def _stored(veil: Veil, enterprise: Principal, job_id: str, model: TrainedModel) -> _StoredModel:
    assert enterprise.slug is not None
    return _StoredModel(
        model, store_artifact(veil, enterprise.slug, enterprise.id, job_id, model.weights)
    )


def output_to_json(output: Released, dataset_version: int | None) -> dict[str, Any]:
    """The stored (and returned) form of a released output."""
    if isinstance(output, _StoredModel):
        return {
            "tier": 4,
            "card": output.model.card,
            "epsilon": output.model.epsilon,
            "delta": output.model.delta,
            "model_sha256": output.artifact.sha256,
            "model_format": "safetensors",
            "dataset_version": dataset_version,
        }
    if isinstance(output, TableRelease):
        return {
            "tier": 2,
            "cells": [
                {"key": c.key, "values": c.values, "status": c.status, "reasons": list(c.reasons)}
                for c in output.cells
            ],
            "rules": asdict(output.rules),
            "dataset_version": dataset_version,
        }
    return {
        "tier": 3,
        "rows": [
            {
                "group": row.group,
                "values": [
                    {
                        "aggregate": v.aggregate,
                        "value": v.value,
                        "noise_scale": v.noise_scale,
                        "ci95": list(v.ci95),
                    }
                    for v in row.values
                ],
            }
            for row in output.rows
        ],
        "epsilon": output.epsilon,
        "delta": output.delta,
        "mechanism": output.mechanism,
        "dataset_version": dataset_version,
    }


Released = QueryRelease | TableRelease | _StoredModel


def _release(veil: Veil, job_id: str, output: Released) -> None:
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        refused = _still_allowed(veil, session, job)
        if not refused:
            result = output_to_json(output, job.dataset_version)
            digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
            job.status, job.result, job.result_sha256 = JobStatus.RELEASED, result, digest
            job.finished_at = veil.clock()
            if isinstance(output, TableRelease):
                _store_cells(session, job, output)
            if isinstance(output, _StoredModel):
                job.artifact_path = output.artifact.path
                job.artifact_wrapped_key = output.artifact.wrapped_key
                job.artifact_sha256 = output.artifact.sha256
            audit.record(
                session,
                "job.released",
                tenant_id=job.enterprise_id,
                resource=f"job:{job.id}",
                details=_release_details(output, digest),
            )
    if refused:
        _fail(
            veil,
            job_id,
            "the grant changed while the job ran; nothing was released: " + "; ".join(refused),
            audit.Outcome.DENIED,
        )


def _store_cells(session: Session, job: Job, output: TableRelease) -> None:
    for cell in output.released:
        session.add(
            ReleasedCell(
                dataset_id=job.dataset_id,
                version=job.dataset_version or 0,
                job_id=job.id,
                conditions=dict(cell.conditions),
                count=cell.count,
            )
        )


def _release_details(output: Released, digest: str) -> dict[str, Any]:
    if isinstance(output, _StoredModel):
        return {
            "result_sha256": digest,
            "model_sha256": output.artifact.sha256,
            "epsilon_spent": output.model.epsilon,
            "delta_spent": output.model.delta,
        }
    if isinstance(output, TableRelease):
        suppressed = sum(1 for c in output.cells if c.status != "ok")
        return {"result_sha256": digest, "cells": len(output.cells), "suppressed": suppressed}
    return {"result_sha256": digest, "epsilon_spent": output.epsilon, "delta_spent": output.delta}


def recover_interrupted_jobs(veil: Veil) -> int:
    """After a crash, jobs left running end failed (their data may have been read)."""
    with veil.db.transaction() as session:
        ids = list(session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING)))
    for job_id in ids:
        _fail(
            veil,
            job_id,
            "interrupted by a restart; the job's budget stays spent",
            audit.Outcome.FAILED,
        )
    return len(ids)


class JobWorker(threading.Thread):
    """The embedded, in-process worker: runs queued jobs and signs audit checkpoints."""

    def __init__(self, veil: Veil) -> None:
        super().__init__(name="veil-job-worker", daemon=True)
        self.veil = veil
        self._stopping = threading.Event()
        self._last_checkpoint = time.monotonic()

    def stop(self) -> None:
        self._stopping.set()
        self.veil.jobs_waiting.set()
        self.join(30)

    def run(self) -> None:
        while not self._stopping.is_set():
            # Clear before looking, so a submission arriving meanwhile is never missed.
            self.veil.jobs_waiting.clear()
            job_id = None
            try:
                cancel_expired(self.veil)
                job_id = claim_next_job(self.veil)
                if job_id is not None:
                    run_job(self.veil, job_id)
                self._maybe_checkpoint()
            except Exception:  # keep serving; the job itself was marked failed where possible
                log.exception("job worker iteration failed")
            if job_id is None:
                self.veil.jobs_waiting.wait(self.veil.settings.job_poll_interval_s)

    def _maybe_checkpoint(self) -> None:
        settings = self.veil.settings
        with self.veil.db.transaction() as session:
            head = session.get(audit.AuditHead, 1)
            last = (
                session.scalar(
                    select(audit.AuditCheckpoint.seq)
                    .order_by(audit.AuditCheckpoint.seq.desc())
                    .limit(1)
                )
                or 0
            )
        pending = (head.seq if head else 0) - last
        due = time.monotonic() - self._last_checkpoint >= settings.audit_checkpoint_interval_s
        if pending >= settings.audit_checkpoint_every or (pending > 0 and due):
            try:
                self.veil.checkpoint()
            except KeyServerUnavailable:
                log.warning("audit checkpoint postponed: key server unavailable")
            self._last_checkpoint = time.monotonic()
