"""The security officer's pages (operators see the same): the audit log, attention, providers.

Each page calls the oversight services with the logged-in principal, exactly as
the API does (``sandbox/api/routes_audit.py``, ``routes_attention.py``), so the
scope of a security officer holds here too.  A refused change is shown next to
the form that caused it, with what was typed; a change that worked redirects
(303) to the page, which shows what it did.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from i18n.catalog import gettext
from keys import KeysError
from policies.errors import InvalidRequest, VeilError
from policies.principals import Principal
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console import officer_views as views
from sandbox.console.render import error_text, page
from sandbox.console.session import PREFIX, CsrfDep, PrincipalDep
from sandbox.jobs import suspension
from sandbox.oversight import attention
from sandbox.oversight import audit_log as oversight
from sandbox.runtime.veil import Veil

router = APIRouter()

#: A one-time notice of what a suspension or reinstatement did, shown after the redirect.
NOTICE_COOKIE = "veil_officer_notice"
PROVIDERS = f"{PREFIX}/providers"
DOWNLOAD = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


# -- the audit log -------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, veil: VeilDep, principal: PrincipalDep) -> Response:
    """The chain's status, the filter form, one page of events, and the export form."""
    query = views.read_audit_query(request.query_params)
    return _audit(request, veil, principal, query, views.ExportForm())


@router.get("/audit/export")
def audit_export(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    from_seq: str = "",
    to_seq: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    """A signed export of a range, downloaded as JSON Lines (``docs/audit.md``)."""
    form = views.ExportForm(from_seq, to_seq, since, until)
    try:
        lines = oversight.export(veil, principal, **form.arguments())
    except (VeilError, KeysError) as exc:
        query = views.read_audit_query({})
        status = status_for(exc)
        return _audit(request, veil, principal, query, form, error_text(exc), status)
    filename = views.export_filename(veil.clock())
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **DOWNLOAD},
    )


@router.get("/audit/public-key")
def audit_public_key(veil: VeilDep, principal: PrincipalDep) -> Response:
    """Every version of the audit signing key's public half (PEM), to verify exports."""
    return Response(
        oversight.public_keys_pem(veil),
        media_type="application/x-pem-file",
        headers={
            "Content-Disposition": 'attachment; filename="veil-audit-public-key.pem"',
            **DOWNLOAD,
        },
    )


def _audit(
    request: Request,
    veil: Veil,
    principal: Principal,
    query: views.AuditQuery,
    export: views.ExportForm,
    export_error: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    chain = views.chain_status(veil, principal)
    events = views.event_page(veil, principal, query) if query.where is not None else None
    return page(
        request,
        "officer_audit.html",
        principal,
        status_code=422 if query.error else status_code,
        chain=chain,
        query=query,
        events=events,
        enterprises=views.enterprises_in_scope(veil, principal),
        page_sizes=views.PAGE_SIZES,
        export=export,
        export_error=export_error,
    )


# -- attention -----------------------------------------------------------------------------------


@router.get("/attention")
def attention_page(
    request: Request, veil: VeilDep, principal: PrincipalDep, since: str = ""
) -> Response:
    """Denied attempts (per provider and per day), budget burn, held outputs, failed logins."""
    now = veil.clock()
    error = None
    try:
        period, start = views.period_start(since or None, now)
    except InvalidRequest as exc:
        error = error_text(exc)
        period, start = views.period_start(None, now)
    view = attention.attention(veil, principal, start)
    daily = views.denials_per_day(veil, principal, start, now)
    return page(
        request,
        "officer_attention.html",
        principal,
        status_code=422 if error else 200,
        view=view,
        daily=daily,
        period=period,
        periods=views.PERIODS,
        error=error,
        **views.denial_charts(view, daily),
    )


# -- providers -----------------------------------------------------------------------------------


@router.get("/providers")
def providers_page(request: Request, veil: VeilDep, principal: PrincipalDep) -> Response:
    """The providers this officer may act on, each with the form that changes its status."""
    notice = _read_notice(request)
    response = _providers(request, veil, principal, notice=notice)
    if request.cookies.get(NOTICE_COOKIE) is not None:
        response.delete_cookie(NOTICE_COOKIE, path=PROVIDERS)
    return response


@router.post("/providers/{provider_id}/suspend", dependencies=[CsrfDep])
def suspend(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    provider_id: str,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Suspend a provider: its tokens are refused, its queued jobs cancelled (audited)."""
    return _change(request, veil, principal, provider_id, "suspend", reason)


@router.post("/providers/{provider_id}/reinstate", dependencies=[CsrfDep])
def reinstate(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    provider_id: str,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Reinstate a suspended provider; jobs the suspension cancelled stay cancelled."""
    return _change(request, veil, principal, provider_id, "reinstate", reason)


def _change(
    request: Request, veil: Veil, principal: Principal, provider_id: str, action: str, reason: str
) -> Response:
    act = suspension.suspend_provider if action == "suspend" else suspension.reinstate_provider
    try:
        result = act(veil, principal, provider_id, reason)
    except (VeilError, KeysError) as exc:
        error = error_text(exc)
        not_done = (
            gettext("Not suspended: {reason}")
            if action == "suspend"
            else gettext("Not reinstated: {reason}")
        )
        error["message"] = not_done.format(reason=error["message"])
        failed = {"provider_id": provider_id, "action": action, "reason": reason, "error": error}
        return _providers(request, veil, principal, failed=failed, status_code=status_for(exc))
    response = RedirectResponse(PROVIDERS, status_code=303)
    response.set_cookie(
        NOTICE_COOKIE,
        base64.urlsafe_b64encode(_notice(result).encode()).decode(),
        path=PROVIDERS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=120,
    )
    return response


def _providers(
    request: Request,
    veil: Veil,
    principal: Principal,
    *,
    notice: str | None = None,
    failed: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    providers = views.providers_in_reach(veil, principal)
    return page(
        request,
        "officer_providers.html",
        principal,
        status_code=status_code,
        providers=providers,
        failed=failed,
        failed_elsewhere=failed is not None
        and all(p.id != failed["provider_id"] for p in providers),
        notice=notice,
    )


def _notice(result: suspension.SuspensionResult) -> str:
    """What a suspension or reinstatement did, in a sentence or two."""
    if result.status == "suspended":
        cancelled = ", ".join(result.cancelled_job_ids) or gettext("none")
        stopping = ", ".join(result.stopping_job_ids) or gettext("none")
        return gettext(
            "{name} is suspended: its tokens are refused from now on. "
            "Queued jobs cancelled: {cancelled}. Running jobs asked to stop: {stopping}."
        ).format(name=result.name, cancelled=cancelled, stopping=stopping)
    return gettext(
        "{name} is active again: its tokens work. Jobs cancelled by the suspension stay cancelled."
    ).format(name=result.name)


def _read_notice(request: Request) -> str | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        return base64.urlsafe_b64decode(raw.encode()).decode()[:1000]
    except (binascii.Error, UnicodeDecodeError):
        return None
