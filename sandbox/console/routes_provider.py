"""The provider's pages: granted datasets and mock data, a private query with its accuracy
preview, jobs with their progress, released results with their accuracy, budgets.

Every page calls the same services as the API (``sandbox.data.catalog``, ``sandbox.jobs.submit``,
``sandbox.jobs.sql_jobs``, ``sandbox.grants.consent`` and the job/result views of
``sandbox.api.routes_jobs``) with the session's principal; nothing here reads data or decides
anything itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from i18n import N_
from i18n.catalog import gettext, translate
from keys import KeysError
from policies.capabilities import Capability, require
from policies.errors import Denied, NotFound, VeilError
from policies.principals import Principal
from sandbox.api import routes_jobs
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console.provider_forms import (
    BudgetView,
    DatasetView,
    QueryForm,
    accuracy_statement,
    dataset_view,
    group_columns,
    jobs_per_day,
    preview_statement,
    progress_steps,
    query_choices,
)
from sandbox.console.provider_sql import SqlForm, TranslationView
from sandbox.console.render import SECURITY_HEADERS, error_text, page
from sandbox.console.result_charts import result_charts
from sandbox.console.session import PREFIX, CsrfDep, PrincipalDep
from sandbox.data import catalog, datasets
from sandbox.grants import consent, letters
from sandbox.jobs import sql_jobs
from sandbox.jobs import submit as jobs
from sandbox.runtime.veil import Veil
from sandbox.store.models import JobStatus

router = APIRouter()

#: What a finished action says on the job page (fixed texts: nothing from the URL is shown).
NOTICES = {
    "cancelled": N_("The job was cancelled. The budget it debited stays spent."),
    "cancel-requested": N_("Cancelling: the job stops at its next check. Its budget stays spent."),
}
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
#: How to fix an SQL query whose FROM names no dataset the provider may query.
FROM_HINT = N_(
    "FROM names one dataset you hold a grant on, by its name in double quotes or by its id: "
    "the Dataset list above shows them."
)


def _provider(principal: Principal) -> Principal:
    require(principal, Capability.USE_GRANTS)
    return principal


def _datasets(veil: Veil, principal: Principal) -> list[DatasetView]:
    """The catalog (tier 0) with the remaining budget of each grant."""
    grants = consent.list_grants(veil, principal)
    return [dataset_view(entry, grants) for entry in catalog.catalog(veil, principal)]


def _failure(exc: Exception) -> tuple[int, dict[str, Any]]:
    """A refused action's status and what to show next to its form; server faults go on."""
    status = status_for(exc)
    if status >= 500:
        raise exc
    error = error_text(exc)
    if isinstance(exc, Denied):
        error["message"] = gettext("Refused by the policy; nothing was spent")
    return status, error


# ---------------------------------------------------------------- catalog and mock data


@router.get("/catalog")
def catalog_page(request: Request, veil: VeilDep, principal: PrincipalDep) -> Response:
    """Each granted dataset: schema, what is granted, rounded rows, remaining budgets."""
    _provider(principal)
    views = _datasets(veil, principal)
    unsigned = letters.awaiting(veil, principal)
    return page(request, "provider_catalog.html", principal, datasets=views, unsigned=unsigned)


@router.get("/catalog/{dataset_id}/mock.csv")
def mock_csv(
    dataset_id: str,
    veil: VeilDep,
    principal: PrincipalDep,
    rows: Annotated[int, Query(ge=1, le=catalog.MAX_MOCK_ROWS)] = 1000,
    seed: Annotated[int, Query(ge=0, le=2**32 - 1)] = 0,
) -> Response:
    """Tier 1: synthetic rows from the declaration only (audited by the catalog service)."""
    _provider(principal)
    data = catalog.mock_data(veil, principal, dataset_id, rows=rows, seed=seed, fmt="csv")
    return Response(
        content=data,
        media_type="text/csv",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{dataset_id}-mock-{seed}.csv"',
        },
    )


# ---------------------------------------------------------------- composing a query


async def read_query_form(request: Request) -> QueryForm:
    return QueryForm.read(await request.form())


async def read_sql_form(request: Request) -> SqlForm:
    return SqlForm.read(await request.form())


QueryFormDep = Annotated[QueryForm, Depends(read_query_form)]
SqlFormDep = Annotated[SqlForm, Depends(read_sql_form)]
#: The page's two ways to write a query: the form (the JSON query document), or SQL.
SQL_MODE = "sql"


def _query_page(
    request: Request,
    veil: Veil,
    principal: Principal,
    form: QueryForm | SqlForm | None = None,
    *,
    dataset_id: str | None = None,
    sql: bool = False,
    status_code: int = 200,
    explained: dict[str, Any] | None = None,
    **context: Any,
) -> Response:
    every = _datasets(veil, principal)
    views = [v for v in every if v.queryable]
    sql = sql or isinstance(form, SqlForm)
    wanted = form.dataset_id if form is not None else dataset_id
    chosen = next((v for v in views if v.id == wanted), views[0] if views else None)
    if chosen is not None and (form is None or form.dataset_id != chosen.id):
        purpose = chosen.purposes[0] if chosen.purposes else ""
        if isinstance(form, SqlForm):  # the SQL as typed stays; the page shows this dataset
            form = replace(form, dataset_id=chosen.id)
        elif sql:
            form = SqlForm.blank(chosen.id, chosen.name, purpose)
        else:
            form = QueryForm.blank(chosen.id, purpose)
    names = {v.id: v.name for v in every}
    return page(
        request,
        "provider_query.html",
        principal,
        status_code=status_code,
        mode=SQL_MODE if sql else "form",
        datasets=views,
        choices=query_choices(chosen) if chosen is not None else None,
        form=form,
        error=context.pop("error", None),
        preview=context.pop("preview", None),
        translation=TranslationView.of(explained, names) if explained else None,
        **context,
    )


def _refused(
    request: Request, veil: Veil, principal: Principal, form: QueryForm | SqlForm, exc: Exception
) -> Response:
    """The form again, with what was refused, why, and how to fix it."""
    status, error = _failure(exc)
    if isinstance(form, SqlForm) and isinstance(exc, NotFound):
        # Only FROM names a dataset here; the same words whether it exists or not.
        error["reasons"] = [gettext(FROM_HINT)]
    return _query_page(request, veil, principal, form, status_code=status, error=error)


@router.get("/query")
def query_page(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    dataset: str | None = None,
    mode: str | None = None,
) -> Response:
    """The form: dataset, purpose, statistics, group-by, ε and δ; or the query in SQL."""
    _provider(principal)
    return _query_page(request, veil, principal, dataset_id=dataset, sql=mode == SQL_MODE)


def _preview_page(
    request: Request, veil: Veil, principal: Principal, form: QueryForm | SqlForm
) -> Response:
    try:
        answer = jobs.preview_job(veil, principal, form.submission())
    except (VeilError, KeysError) as exc:
        return _refused(request, veil, principal, form, exc)
    found = answer["preview"]
    if found is None:
        reasons = [translate(r) for r in answer["reasons"]]
        error = {"message": gettext("This query would be refused"), "reasons": reasons}
        return _query_page(request, veil, principal, form, status_code=403, error=error)
    preview = {
        "epsilon": found.epsilon,
        "delta": found.delta,
        "notes": list(found.notes),
        "items": [
            (i.aggregate, i.noise_scale, preview_statement(i.ci95_half_width, i.note))
            for i in found.aggregates
        ],
    }
    return _query_page(request, veil, principal, form, preview=preview)


def _submitted(
    request: Request, veil: Veil, principal: Principal, form: QueryForm | SqlForm
) -> Response:
    try:
        job = jobs.submit_job(veil, principal, form.submission())
    except (VeilError, KeysError) as exc:
        return _refused(request, veil, principal, form, exc)
    return RedirectResponse(f"{PREFIX}/jobs/{job.id}", status_code=303)


@router.post("/query/preview", dependencies=[CsrfDep])
def preview_query(
    request: Request, veil: VeilDep, principal: PrincipalDep, form: QueryFormDep
) -> Response:
    """What the query would cost and how accurate it would be; spends nothing."""
    _provider(principal)
    return _preview_page(request, veil, principal, form)


@router.post("/query", dependencies=[CsrfDep])
def run_query(
    request: Request, veil: VeilDep, principal: PrincipalDep, form: QueryFormDep
) -> Response:
    """Submit the query (decided, debited and queued at once); then its job page."""
    _provider(principal)
    return _submitted(request, veil, principal, form)


@router.post("/query/sql/translate", dependencies=[CsrfDep])
def translate_sql(
    request: Request, veil: VeilDep, principal: PrincipalDep, form: SqlFormDep
) -> Response:
    """The query document the SQL translates to, and the dataset FROM names (the service of
    ``POST /v1/queries/translate``); submits nothing, spends nothing, reads no data."""
    _provider(principal)
    try:
        explained = sql_jobs.explain(veil, principal, form.checked_sql())
    except (VeilError, KeysError) as exc:
        return _refused(request, veil, principal, form, exc)
    form = replace(form, dataset_id=explained["dataset_id"])  # the page follows FROM
    return _query_page(request, veil, principal, form, explained=explained)


@router.post("/query/sql/preview", dependencies=[CsrfDep])
def preview_sql(
    request: Request, veil: VeilDep, principal: PrincipalDep, form: SqlFormDep
) -> Response:
    """What the SQL query would cost and how accurate it would be; spends nothing."""
    _provider(principal)
    return _preview_page(request, veil, principal, form)


@router.post("/query/sql", dependencies=[CsrfDep])
def run_sql(request: Request, veil: VeilDep, principal: PrincipalDep, form: SqlFormDep) -> Response:
    """Submit the SQL query as the API does: translated once, the job keeps both."""
    _provider(principal)
    return _submitted(request, veil, principal, form)


# ---------------------------------------------------------------- jobs and results


@router.get("/jobs")
def jobs_page(request: Request, veil: VeilDep, principal: PrincipalDep) -> Response:
    """The provider's jobs, newest first, and how many were submitted each day."""
    _provider(principal)
    listed = routes_jobs.list_jobs(veil, principal, limit=500)
    names = {d.id: d.name for d in datasets.granted_datasets(veil, principal)}
    svg, numbers = jobs_per_day(listed)
    return page(
        request,
        "provider_jobs.html",
        principal,
        jobs=listed,
        names=names,
        chart_svg=svg,
        chart_rows=numbers,
    )


def _job_page(
    request: Request,
    veil: Veil,
    principal: Principal,
    job_id: str,
    *,
    status_code: int = 200,
    error: dict[str, Any] | None = None,
    notice: str | None = None,
) -> Response:
    with veil.db.transaction() as session:
        job = jobs.visible_job(session, principal, job_id)
        started_at = job.started_at
        shown = routes_jobs.job_out(job, principal)
    released = shown.status == JobStatus.RELEASED
    result = routes_jobs.get_result(job_id, veil, principal) if released else None
    grant_budget = None
    if shown.grant_id is not None:
        grant_budget = BudgetView.of(consent.get_grant(veil, principal, shown.grant_id))
    names = {d.id: d.name for d in datasets.granted_datasets(veil, principal)}
    return page(
        request,
        "provider_job.html",
        principal,
        status_code=status_code,
        job=shown,
        dataset_name=names.get(shown.dataset_id, shown.dataset_id),
        active=shown.status in _ACTIVE,
        steps=progress_steps(shown, started_at),
        result=result,
        groups=group_columns(result.rows or []) if result is not None else [],
        result_charts=result_charts([r.model_dump() for r in result.rows or []] if result else []),
        statement=accuracy_statement,
        grant_budget=grant_budget,
        error=error,
        notice=notice,
    )


@router.get("/jobs/{job_id}")
def job_page(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    job_id: str,
    done: str | None = None,
) -> Response:
    """Status and progress (refreshing while active); the released result and its accuracy."""
    _provider(principal)
    notice = NOTICES.get(done or "")
    return _job_page(request, veil, principal, job_id, notice=gettext(notice) if notice else None)


@router.post("/jobs/{job_id}/cancel", dependencies=[CsrfDep])
def cancel_job(request: Request, veil: VeilDep, principal: PrincipalDep, job_id: str) -> Response:
    """Cancel a queued job, or ask a running one to stop; the budget stays spent."""
    _provider(principal)
    try:
        job = jobs.cancel_job(veil, principal, job_id)
    except (VeilError, KeysError) as exc:
        status, error = _failure(exc)
        return _job_page(request, veil, principal, job_id, status_code=status, error=error)
    done = "cancelled" if job.status == JobStatus.FAILED else "cancel-requested"
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}?done={done}", status_code=303)
