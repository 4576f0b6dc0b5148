"""The enterprise's pages: datasets (upload and classify), grants, code approvals, receipts.

Each page calls the services the API calls (``sandbox.data.datasets``,
``sandbox.grants.consent``, ``sandbox.jobs.reviewed_code``, ``sandbox.oversight.receipts``)
as the logged-in enterprise.  A refused change is shown next to the form that caused it,
keeping what was typed; a change that was made redirects (303) to its page with a notice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select

from analytics.schema import ColumnClass
from i18n import N_, Msg
from i18n.catalog import gettext
from keys import KeysError
from policies.budget import ledger_epsilon
from policies.capabilities import Capability, require
from policies.errors import NotFound, VeilError
from policies.grants import BudgetDebit, Grant
from policies.principals import Principal, Role
from sandbox.accounts import tenants
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.api.routes_receipts import PAGE_POLICY
from sandbox.console import enterprise_forms as forms
from sandbox.console.charts import line_chart
from sandbox.console.labels import TIERS as LABELED_TIERS
from sandbox.console.render import SECURITY_HEADERS, error_text, number, page, when
from sandbox.console.session import (
    CSRF_HEADER,
    PREFIX,
    CsrfDep,
    CsrfRejected,
    PrincipalDep,
    require_csrf,
)
from sandbox.data import datasets
from sandbox.grants import consent, letters, purposes
from sandbox.jobs import reviewed_code
from sandbox.oversight import receipts
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, CodeStatus, Dataset

router = APIRouter()

ERRORS: Final = (VeilError, KeysError)
#: The tiers' names (translated where a page shows them).
TIERS: Final = LABELED_TIERS
#: What a finished change says on its page (fixed texts, translated when shown: nothing
#: from the URL is shown but the choice among them).
NOTICES: Final = {
    "dataset-created": N_("The dataset was declared and its first version stored, encrypted."),
    "version-uploaded": N_("The new version was stored, encrypted."),
    "grant-created": N_("The grant was created; the provider can use it now."),
    "grant-changed": N_("The grant was changed; the change is in the audit log with your reason."),
    "grant-revoked": N_("The grant was revoked; its queued jobs were cancelled."),
    "letter-issued": N_(
        "The commitment letter was issued; the grant comes into force when the provider signs it."
    ),
    "code-approved": N_("The code was approved; only this exact source may run."),
    "code-denied": N_("The code was denied; it will never run on your data."),
    "source-ran": N_("The source ran; its state below says what it stored or why it failed."),
    "source-queued": N_(
        "The run was queued for the scheduler that reads this continuous source; it runs at "
        "its next poll, and its state below then says what it stored or why it failed."
    ),
}


def notice_text(key: str | None) -> str | None:
    """The notice named in a page's URL, in the reader's language (None for another)."""
    text = NOTICES.get(key or "")
    return gettext(text) if text else None


#: Room for the form's own fields besides the file, in a dataset upload.
FORM_SLACK: Final = 1 << 20


def enterprise(principal: PrincipalDep) -> Principal:
    require(principal, Capability.OWN_DATA)
    return principal


async def require_csrf_header(request: Request) -> None:
    """Uploads come from the page's script with the CSRF header, so Starlette never parses
    their body (it would spool the file to disk); :func:`uploads.read_multipart` does."""
    if request.headers.get(CSRF_HEADER) is None:
        raise CsrfRejected(Msg("this form works with the page's script: reload the page and retry"))
    await require_csrf(request)


EnterpriseDep = Annotated[Principal, Depends(enterprise)]
FieldsDep = Annotated[forms.Fields, Depends(forms.form_fields)]
UploadCsrf = Depends(require_csrf_header)


def done_redirect(path: str, notice: str) -> Response:
    """To the page, at its top where the notice is (a form's #fragment would carry over)."""
    return RedirectResponse(f"{PREFIX}{path}?notice={notice}#main", status_code=303)


def problem_fragment(request: Request, principal: Principal, exc: Exception) -> Response:
    """An error as a fragment, for the script to show next to its form."""
    error = error_text(exc)
    return page(request, "enterprise_problem.html", principal, status_for(exc), error=error)


# ---------------------------------------------------------------- grants


@dataclass(frozen=True)
class GrantView:
    """A grant with what its card shows, and the forms' values (as typed, after an error)."""

    grant: Grant
    label: str
    provider: str
    datasets: list[str]
    status: str
    form: forms.Fields
    reason: str = ""
    error: dict[str, Any] | None = None
    error_in: str = ""  # "change" or "revoke"

    @property
    def spent_share(self) -> float:
        budget = self.grant.budget()
        return budget["epsilon_spent"] / budget["epsilon"] if budget["epsilon"] else 0.0


def _status(grant: Grant, now: datetime) -> str:
    if grant.revoked_at is not None:
        return "revoked"
    if now >= grant.valid_until:
        return "expired"
    return "active" if now >= grant.valid_from else "not yet valid"


def _grantable(owned: list[Dataset]) -> list[tuple[str, str]]:
    """Each non-secret column name of the datasets, with its class (first declaration wins)."""
    found: dict[str, str] = {}
    for dataset in owned:
        for c in datasets.schema_from_json(dataset.declaration).columns:
            if c.column_class != ColumnClass.SECRET:
                found.setdefault(c.name, c.column_class.value)
    return list(found.items())


@dataclass(frozen=True)
class Failed:
    """A grant's form that was refused: which, what was typed, and why."""

    grant_id: str
    form: str
    fields: forms.Fields
    error: dict[str, Any]

    def apply(self, view: GrantView) -> GrantView:
        if self.form == "revoke":
            return replace(
                view, reason=self.fields.one("reason"), error=self.error, error_in="revoke"
            )
        return replace(view, form=self.fields, error=self.error, error_in="change")


def _grants_page(
    request: Request,
    veil: Veil,
    owner: Principal,
    status_code: int = 200,
    *,
    create: forms.Fields | None = None,
    create_error: dict[str, Any] | None = None,
    failed: Failed | None = None,
    notice: str | None = None,
) -> Response:
    now = veil.clock()
    providers = tenants.list_principals(veil, owner, Role.PROVIDER)
    names = {p.id: p.name for p in providers}
    owned = [d for d, _ in datasets.list_datasets(veil, owner)]
    dataset_names = {d.id: d.name for d in owned}
    views = []
    for g in reversed(consent.list_grants(veil, owner)):
        view = GrantView(
            g,
            f"{names.get(g.provider_id, '?')} #{g.id[3:9]}",
            names.get(g.provider_id, g.provider_id),
            [dataset_names.get(d, d) for d in g.dataset_ids],
            _status(g, now),
            forms.grant_form(g),
        )
        views.append(failed.apply(view) if failed and failed.grant_id == g.id else view)
    chart, rows = _budget_burn(veil, views, now)
    valid_until = forms.minute(now + timedelta(days=90))
    return page(
        request,
        "enterprise_grants.html",
        owner,
        status_code,
        grants=views,
        providers=[p for p in providers if p.status == "active"],
        datasets=owned,
        columns=_grantable(owned),
        tiers=TIERS,
        create=create or forms.Fields([("valid_until", valid_until), ("epsilon", "1")]),
        create_error=create_error,
        burn=chart,
        burn_rows=rows,
        notice=notice,
        letters=letters.by_grant(veil, owner),
        purposes=purposes.purposes(veil, owner),
    )


def _budget_burn(
    veil: Veil, views: list[GrantView], now: datetime
) -> tuple[Markup, list[tuple[str, str, str, str]]]:
    """Cumulative ε spent per grant over time, from the ledger's debits (and its numbers)."""
    by_id = {v.grant.id: v for v in views}
    with veil.db.transaction() as session:
        debits = session.scalars(
            select(BudgetDebit)
            .where(BudgetDebit.grant_id.in_(list(by_id)))
            .order_by(BudgetDebit.created_at, BudgetDebit.id)
        ).all()
    # Every grant has a line (flat at 0 until its first debit) and its total in the legend.
    series = {v.label: [(v.grant.created_at, 0.0)] for v in views}
    totals = {v.label: v.grant.budget()["epsilon"] for v in views}
    rows = []
    spent: dict[str, int] = defaultdict(int)
    for debit in debits:
        view = by_id[debit.grant_id]
        points = series[view.label]
        spent[debit.grant_id] += debit.epsilon
        points.append((debit.created_at, ledger_epsilon(spent[debit.grant_id])))
        rows.append(
            (
                view.label,
                when(debit.created_at),
                number(ledger_epsilon(debit.epsilon)),
                number(points[-1][1]),
            )
        )
    for view in views:
        points = series.get(view.label, [])
        end = min(now, view.grant.revoked_at or now, view.grant.valid_until)
        if points and end > points[-1][0]:
            points.append((end, points[-1][1]))
    title = gettext("Budget burn: cumulative ε spent per grant")
    return line_chart(title, series, unit=" ε", totals=totals), rows


@router.get("/grants")
def grants_page(
    request: Request, veil: VeilDep, owner: EnterpriseDep, notice: str | None = None
) -> Response:
    return _grants_page(request, veil, owner, notice=notice_text(notice))


@router.post("/grants", dependencies=[CsrfDep])
def create_grant(
    request: Request, veil: VeilDep, owner: EnterpriseDep, fields: FieldsDep
) -> Response:
    try:
        consent.grant_access(veil, owner, forms.grant_terms(fields, veil.clock()))
    except ERRORS as exc:
        error = error_text(exc)
        return _grants_page(
            request, veil, owner, status_for(exc), create=fields, create_error=error
        )
    return done_redirect("/grants", "grant-created")


@router.post("/grants/{grant_id}/change", dependencies=[CsrfDep])
def change_grant(
    grant_id: str, request: Request, veil: VeilDep, owner: EnterpriseDep, fields: FieldsDep
) -> Response:
    """Narrow the grant (or extend its validity), with a reason."""
    try:
        grant = consent.get_grant(veil, owner, grant_id)
        changes = forms.grant_change(fields, grant)
        consent.change(veil, owner, grant_id, changes, fields.one("reason"))
    except NotFound:
        raise
    except ERRORS as exc:
        failed = Failed(grant_id, "change", fields, error_text(exc))
        return _grants_page(request, veil, owner, status_for(exc), failed=failed)
    return done_redirect("/grants", "grant-changed")


@router.post("/grants/{grant_id}/revoke", dependencies=[CsrfDep])
def revoke_grant(
    grant_id: str, request: Request, veil: VeilDep, owner: EnterpriseDep, fields: FieldsDep
) -> Response:
    try:
        consent.get_grant(veil, owner, grant_id)
        consent.revoke(veil, owner, grant_id, tenants.require_reason(fields.one("reason")))
    except NotFound:
        raise
    except ERRORS as exc:
        failed = Failed(grant_id, "revoke", fields, error_text(exc))
        return _grants_page(request, veil, owner, status_for(exc), failed=failed)
    return done_redirect("/grants", "grant-revoked")


# ---------------------------------------------------------------- code approvals


@dataclass(frozen=True)
class CodeView:
    code: CodeRequest
    provider: str
    dataset: str
    columns: list[tuple[str, str]]  # (name, class)
    mock: str
    checks: dict[str, Any]
    reason: str = ""
    error: dict[str, Any] | None = None


def _code_view(code: CodeRequest, providers: dict[str, str], owned: dict[str, Dataset]) -> CodeView:
    dataset = owned.get(code.dataset_id)
    schema = datasets.schema_from_json(dataset.declaration) if dataset else None
    classes = {c.name: c.column_class.value for c in schema.columns} if schema else {}
    mock = code.mock_output or {}
    return CodeView(
        code,
        providers.get(code.provider_id, code.provider_id),
        dataset.name if dataset else code.dataset_id,
        [(c, classes.get(c, "?")) for c in code.columns],
        forms.shown_json(mock.get("value")),
        mock.get("checks") or {},
    )


def _code_page(
    request: Request,
    veil: Veil,
    owner: Principal,
    status_code: int = 200,
    *,
    failed: tuple[str, str, dict[str, Any]] | None = None,
    notice: str | None = None,
) -> Response:
    providers = {p.id: p.name for p in tenants.list_principals(veil, owner, Role.PROVIDER)}
    owned = {d.id: d for d, _ in datasets.list_datasets(veil, owner)}
    views = []
    for code in reviewed_code.list_code(veil, owner):
        view = _code_view(code, providers, owned)
        if failed and failed[0] == code.id:
            view = replace(view, reason=failed[1], error=failed[2])
        views.append(view)
    pending = [v for v in views if v.code.status == CodeStatus.PENDING]
    decided = [v for v in views if v.code.status != CodeStatus.PENDING]
    context = {"pending": pending, "decided": decided, "notice": notice}
    return page(request, "enterprise_code.html", owner, status_code, **context)


@router.get("/code")
def code_page(
    request: Request, veil: VeilDep, owner: EnterpriseDep, notice: str | None = None
) -> Response:
    return _code_page(request, veil, owner, notice=notice_text(notice))


@router.post("/code/{code_id}/{decision}", dependencies=[CsrfDep])
def review_code(
    code_id: str,
    decision: Literal["approve", "deny"],
    request: Request,
    veil: VeilDep,
    owner: EnterpriseDep,
    fields: FieldsDep,
) -> Response:
    """Approve this exact source (its SHA-256 is pinned) or deny it, with a reason."""
    reason, approve = fields.one("reason"), decision == "approve"
    try:
        reviewed_code.review_code(veil, owner, code_id, approve, reason)
    except NotFound:
        raise
    except ERRORS as exc:
        failed = (code_id, reason, error_text(exc))
        return _code_page(request, veil, owner, status_for(exc), failed=failed)
    return done_redirect("/code", "code-approved" if approve else "code-denied")


# ---------------------------------------------------------------- usage receipts


def _receipts_page(
    request: Request, veil: Veil, owner: Principal, status_code: int = 200, **context: Any
) -> Response:
    since = (veil.clock() - timedelta(days=30)).strftime("%Y-%m-%d")
    context = {"form": forms.Fields([("since", since)]), "error": None, "receipt": None} | context
    providers = tenants.list_principals(veil, owner, Role.PROVIDER)
    return page(
        request, "enterprise_receipts.html", owner, status_code, providers=providers, **context
    )


@router.get("/receipts")
def receipts_page(request: Request, veil: VeilDep, owner: EnterpriseDep) -> Response:
    """Only the form: each receipt issued is audited, so none is made until asked for."""
    return _receipts_page(request, veil, owner)


@router.post("/receipts", dependencies=[CsrfDep])
def issue_receipt(
    request: Request, veil: VeilDep, owner: EnterpriseDep, fields: FieldsDep
) -> Response:
    """Issue (sign and audit) a receipt and show its summary, with links to its files."""
    try:
        since, until = forms.receipt_period(fields, veil.clock())
        receipt = receipts.build_receipt(veil, owner, fields.one("provider_id"), since, until)
    except ERRORS as exc:
        error = error_text(exc)
        return _receipts_page(request, veil, owner, status_for(exc), form=fields, error=error)
    period = receipt["period"]
    query = urlencode({"provider_id": receipt["provider"]["id"], **period})
    return _receipts_page(request, veil, owner, form=fields, receipt=receipt, query=query)


@router.get("/receipts/{kind}")
def receipt_file(
    kind: Literal["download", "page"],
    veil: VeilDep,
    owner: EnterpriseDep,
    provider_id: str,
    since: datetime,
    until: datetime,
) -> Response:
    """A new receipt for the period shown: the signed JSON as a file (``veil receipts
    verify`` checks it offline), or its own page, whose inline style needs the API's
    receipt policy instead of the console's."""
    receipt = receipts.build_receipt(veil, owner, provider_id, since, until)
    if kind == "page":
        headers = {**SECURITY_HEADERS, "Content-Security-Policy": PAGE_POLICY}
        return HTMLResponse(receipts.render_html(receipt), headers=headers)
    attachment = f'attachment; filename="receipt-{receipt["id"]}.json"'
    headers = {**SECURITY_HEADERS, "Content-Disposition": attachment}
    return Response(receipts.dumps(receipt), media_type="application/json", headers=headers)
