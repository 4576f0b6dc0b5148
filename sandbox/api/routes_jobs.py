"""Jobs: submit, preview, list, show, cancel, result, model."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from analytics.query_document import query_json_schema
from analytics.training_document import training_json_schema
from i18n import Msg
from policies.capabilities import Capability, may, require
from policies.errors import Conflict, InvalidRequest
from policies.grants import Grant
from policies.principals import Principal
from sandbox.api import job_waits
from sandbox.api.deps import PrincipalDep, VeilDep, current_principal
from sandbox.api.messages import translate_stored
from sandbox.api.schemas import (
    BudgetOut,
    JobIn,
    JobOut,
    PreviewItemOut,
    PreviewOut,
    ResultOut,
    SqlIn,
    SqlTranslationOut,
)
from sandbox.jobs import sql_jobs
from sandbox.jobs import submit as jobs
from sandbox.jobs.artifacts import load_artifact
from sandbox.jobs.retention import refuse_if_shredded
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus

router = APIRouter(prefix="/v1", tags=["jobs"])


def _progress(job: Job, viewer: Principal | None) -> dict[str, Any] | None:
    """The training loss is computed on private data: only the data owner sees it."""
    if job.progress is None or (viewer is not None and viewer.id == job.enterprise_id):
        return job.progress
    return {k: v for k, v in job.progress.items() if k != "loss"}


def _checks_out(checks: dict[str, Any] | None) -> dict[str, Any] | None:
    """Tier 5's output checks with their reasons in the reader's language (stored English)."""
    reasons = checks.get("reasons") if checks else None
    if not checks or not isinstance(reasons, list):
        return checks
    return checks | {"reasons": [translate_stored(r) for r in reasons]}


def job_out(job: Job, viewer: Principal | None = None) -> JobOut:
    return JobOut(
        progress=_progress(job, viewer),
        cancel_requested=job.cancel_requested,
        output_check=_checks_out(job.output_check),
        id=job.id,
        provider_id=job.provider_id,
        dataset_id=job.dataset_id,
        dataset_version=job.dataset_version,
        grant_id=job.grant_id,
        purpose=job.purpose,
        tier=job.tier,
        query=job.query,
        sql=job.sql,
        epsilon=job.cost.epsilon,
        delta=job.cost.delta,
        status=job.status,
        # Stored in English (receipts sign them); shown in the reader's language.
        reasons=[translate_stored(r) for r in job.reasons],
        error=translate_stored(job.error) if job.error else job.error,
        created_at=job.created_at,
        finished_at=job.finished_at,
        shredded_at=job.shredded_at,
    )


def _submission(body: JobIn) -> jobs.JobSubmission:
    if not body.purpose.isprintable():
        # Purposes are shown in denials, the audit log and receipts: nothing that can hide or
        # reorder text there (control characters, bidirectional overrides).
        raise InvalidRequest(
            Msg("purpose must be 1-64 printable characters, no control characters")
        )
    if (body.query is None) == (body.sql is None):
        raise InvalidRequest(Msg("give the query as query (JSON) or as sql, exactly one of them"))
    if body.sql is None and body.dataset_id is None:
        raise InvalidRequest(Msg("dataset_id: required (only an sql query names it in FROM)"))
    return jobs.JobSubmission(
        dataset_id=body.dataset_id or "",
        purpose=body.purpose,
        tier=body.tier,
        epsilon=body.epsilon,
        delta=body.delta,
        query=body.query or {},
        sql=body.sql,
    )


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED)
async def submit_job(body: JobIn, veil: VeilDep, caller: PrincipalDep) -> JobOut:
    """Submit a tier-2 table (SDC-checked) or a tier-3 private query.

    Denied: 403 with the reasons.  Allowed: 202, queued, with the budget already debited.
    """
    # One trip through the thread pool: FastAPI checks a sync route's answer in another.
    return await run_in_threadpool(_submitted, veil, caller, body)


def _submitted(veil: Veil, caller: Principal, body: JobIn) -> JobOut:
    return job_out(jobs.submit_job(veil, caller, _submission(body)))


@router.post("/jobs/preview")
def preview_job(body: JobIn, veil: VeilDep, caller: PrincipalDep) -> PreviewOut:
    """What a tier-2 table, tier-3 query or tier-4 training would cost, and its expected
    error.  Spends nothing and reads no data.
    """
    answer = jobs.preview_job(veil, caller, _submission(body))
    if answer.get("table") is not None:
        return PreviewOut(allowed=True, reasons=[], epsilon=0.0, delta=0.0, table=answer["table"])
    if answer.get("training") is not None:
        training = answer["training"]
        return PreviewOut(
            allowed=True,
            reasons=[],
            epsilon=training.epsilon,
            delta=training.delta,
            training=asdict(training),
        )
    preview = answer["preview"]
    if preview is None:
        return PreviewOut(allowed=False, reasons=[translate_stored(r) for r in answer["reasons"]])
    return PreviewOut(
        allowed=True,
        reasons=[],
        epsilon=preview.epsilon,
        delta=preview.delta,
        aggregates=[
            PreviewItemOut.model_validate(i, from_attributes=True) for i in preview.aggregates
        ],
        notes=list(preview.notes),
    )


@router.post("/queries/translate")
def translate_sql(body: SqlIn, veil: VeilDep, caller: PrincipalDep) -> SqlTranslationOut:
    """The query document an SQL query translates to, and the dataset it names; submits
    nothing, spends nothing, reads no data (docs/sql.md)."""
    return SqlTranslationOut(**sql_jobs.explain(veil, caller, body.sql))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, veil: VeilDep, caller: PrincipalDep) -> JobOut:
    """Cancel a queued job at once, or ask a running one to stop; the budget stays spent."""
    return job_out(jobs.cancel_job(veil, caller, job_id), caller)


@router.get("/jobs/{job_id}/model", responses={200: {"content": {"application/octet-stream": {}}}})
def download_model(job_id: str, veil: VeilDep, caller: PrincipalDep) -> Response:
    """Tier 4: the released model's weights (safetensors; load them with the card)."""
    require(caller, Capability.READ_JOBS)
    with veil.db.transaction() as session:
        job = jobs.visible_job(session, caller, job_id)
        enterprise = session.get(Principal, job.enterprise_id)
    refuse_if_shredded(job)
    from_node = job.node_release is not None  # a node's release: kept as released (nodes)
    if (
        job.status != JobStatus.RELEASED
        or not job.artifact_path
        or not (job.artifact_wrapped_key or from_node)
    ):
        raise Conflict(
            Msg(
                "job '{job_id}' has no released model (status: {status})",
                job_id=job_id,
                status=job.status,
            )
        )
    if from_node:
        data = (veil.settings.objects_dir / job.artifact_path).read_bytes()
    else:
        assert enterprise is not None and enterprise.slug is not None
        assert job.artifact_wrapped_key is not None
        data = load_artifact(
            veil, enterprise.slug, job.id, job.artifact_path, job.artifact_wrapped_key
        )
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{job_id}.safetensors"',
            "X-Veil-SHA256": job.artifact_sha256 or "",
        },
    )


@router.get("/schemas/training", tags=["schemas"], dependencies=[Depends(current_principal)])
def training_schema() -> dict[str, Any]:
    """The JSON Schema of the tier-4 training document."""
    return training_json_schema()


@router.get("/schemas/query", tags=["schemas"], dependencies=[Depends(current_principal)])
def query_schema() -> dict[str, Any]:
    """The JSON Schema of the query document (also in docs/query.schema.json)."""
    return query_json_schema()


@router.get("/jobs")
def list_jobs(
    veil: VeilDep, caller: PrincipalDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[JobOut]:
    """A provider's jobs, or the jobs on an enterprise's data; newest first."""
    require(caller, Capability.READ_JOBS)
    column = Job.provider_id if may(caller, Capability.USE_GRANTS) else Job.enterprise_id
    with veil.db.transaction() as session:
        rows = session.scalars(
            select(Job).where(column == caller.id).order_by(Job.created_at.desc()).limit(limit)
        )
        return [job_out(j, caller) for j in rows]


def _read_job(veil: Veil, caller: Principal, job_id: str) -> JobOut:
    require(caller, Capability.READ_JOBS)
    with veil.db.read() as session:
        return job_out(jobs.visible_job(session, caller, job_id), caller)


@router.get("/jobs/{job_id}")
async def get_job(
    job_id: str,
    request: Request,
    veil: VeilDep,
    caller: PrincipalDep,
    wait: Annotated[
        float,
        Query(ge=0, le=job_waits.MAX_WAIT_S,
              description="seconds to wait for the job to end (a long poll; at most 30)"),
    ] = 0.0,
) -> JobOut:  # fmt: skip
    """A job as it stands.  With ``wait``, a long poll: answered as soon as the job is no
    longer queued or running (released, failed, denied, or held for its enterprise), else
    after ``wait`` seconds with the job as it then stands.  The caller is checked again
    just before the answer (a token revoked or an account suspended meanwhile gets 401).
    A principal may have 8 requests waiting in one API process; more are answered at once,
    as without ``wait``.  A waiting request holds no server thread (``sandbox.api.job_waits``)."""
    job = await run_in_threadpool(_read_job, veil, caller, job_id)
    if not wait or job.status not in job_waits.IN_PROGRESS:
        return job
    if not await job_waits.until_ended(veil, job_id, caller.id, wait, request.is_disconnected):
        return job  # as many of the caller's requests wait as may: answered at once
    # The same checks as at the start, now: the wait may have outlived the credential.
    caller = await current_principal(request, veil)
    return await run_in_threadpool(_read_job, veil, caller, job_id)


@router.get("/jobs/{job_id}/result")
def get_result(job_id: str, veil: VeilDep, caller: PrincipalDep) -> ResultOut:
    """The released result (a DP query with accuracy, or an SDC-checked table) and the budget."""
    require(caller, Capability.READ_JOBS)
    with veil.db.transaction() as session:
        job = jobs.visible_job(session, caller, job_id)
        refuse_if_shredded(job)
        if job.status != JobStatus.RELEASED or job.result is None or job.result_sha256 is None:
            raise Conflict(
                Msg(
                    "job '{job_id}' has no released result (status: {status})",
                    job_id=job_id,
                    status=job.status,
                )
            )
        grant = session.get(Grant, job.grant_id)
        assert grant is not None
        return ResultOut(
            job_id=job.id,
            result_sha256=job.result_sha256,
            remaining_budget=BudgetOut(**grant.budget()),
            **job.result,
        )
