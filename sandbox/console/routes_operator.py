"""The operator's pages: enterprises, provider accounts, security officers and the programme's
bureau, each listed with a form that creates one, and an API token issued for any of them.

Each form calls the service the API and the CLI call (``sandbox.accounts.tenants``,
``sandbox.accounts.tokens``) with the logged-in principal, so the checks and the audit
events are exactly the API's
(``enterprise.created``, ``provider.created``, ``security_officer.created``,
``bureau.created``, ``token.issued``).
Only the operator reaches these pages: anyone else is refused (403) before anything is read.

A creation redirects (303) to its page, with a one-time notice; a refused one is shown next to
its form, with what was typed.  A new token is the answer to its form itself, shown once: it is
never put in a cookie or a URL, and Veil keeps only its hash.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from i18n import Msg
from i18n.catalog import translate
from keys import KeysError
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest, VeilError
from policies.principals import Principal, Role
from sandbox.accounts import tenants, tokens
from sandbox.accounts.categories import Category, SizeBand
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console.render import error_text, page
from sandbox.console.session import PREFIX, CsrfDep, console_principal
from sandbox.runtime.veil import Veil

router = APIRouter()

BASE = f"{PREFIX}/operator"
#: A one-time notice of what a creation did, shown after the redirect.
NOTICE_COOKIE = "veil_operator_notice"


def operator_principal(principal: Annotated[Principal, Depends(console_principal)]) -> Principal:
    """The session's principal if it is the operator; anyone else is refused (403)."""
    require(principal, Capability.MANAGE_PRINCIPALS)
    return principal


OperatorDep = Annotated[Principal, Depends(operator_principal)]


@dataclass(frozen=True)
class Kind:
    """One kind of principal the operator creates: its role, page and template."""

    role: Role
    slug: str  # the page's path under /console/operator
    template: str


ENTERPRISES = Kind(Role.ENTERPRISE, "enterprises", "operator_enterprises.html")
PROVIDERS = Kind(Role.PROVIDER, "providers", "operator_providers.html")
OFFICERS = Kind(Role.SECURITY_OFFICER, "officers", "operator_officers.html")
BUREAU = Kind(Role.BUREAU, "bureau", "operator_bureau.html")
KINDS = {k.role: k for k in (ENTERPRISES, PROVIDERS, OFFICERS, BUREAU)}


@dataclass
class Failed:
    """A refused creation: the error and what was typed, shown again in its form."""

    error: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)


# -- the pages ------------------------------------------------------------------------------------


@router.get("/operator/enterprises")
def enterprises_page(request: Request, veil: VeilDep, operator: OperatorDep) -> Response:
    """Every enterprise (tenant), and the form that creates one with its key-server namespace."""
    return _listing(request, veil, operator, ENTERPRISES)


@router.get("/operator/providers")
def providers_page(request: Request, veil: VeilDep, operator: OperatorDep) -> Response:
    """Every provider account, and the form that creates one."""
    return _listing(request, veil, operator, PROVIDERS)


@router.get("/operator/officers")
def officers_page(request: Request, veil: VeilDep, operator: OperatorDep) -> Response:
    """Every security officer with the enterprises it oversees, and the form that creates one."""
    return _listing(request, veil, operator, OFFICERS)


@router.get("/operator/bureau")
def bureau_page(request: Request, veil: VeilDep, operator: OperatorDep) -> Response:
    """The programme's bureau (one per programme), and the form that creates it if there is
    none yet (``docs/programme.md``)."""
    return _listing(request, veil, operator, BUREAU)


# -- creating -------------------------------------------------------------------------------------


@router.post("/operator/enterprises", dependencies=[CsrfDep])
def create_enterprise(
    request: Request,
    veil: VeilDep,
    operator: OperatorDep,
    name: Annotated[str, Form()] = "",
    slug: Annotated[str, Form()] = "",
    # Checked by the service (length, characters, the size bands), as the API's are.
    industry: Annotated[str, Form()] = "",
    district: Annotated[str, Form()] = "",
    size_band: Annotated[str, Form()] = "",
) -> Response:
    """Create an enterprise, with its public categories if given (``docs/programme.md``);
    the service provisions its key-server namespace and key first."""
    slug = slug.strip()
    given = {
        Category.INDUSTRY: industry,
        Category.DISTRICT: district,
        Category.SIZE_BAND: size_band,
    }
    return _create(
        request,
        veil,
        operator,
        ENTERPRISES,
        lambda: tenants.create_enterprise(veil, operator, name, slug, given),
        {"name": name, "slug": slug, **{c.value: v for c, v in given.items()}},
    )


@router.post("/operator/providers", dependencies=[CsrfDep])
def create_provider(
    request: Request, veil: VeilDep, operator: OperatorDep, name: Annotated[str, Form()] = ""
) -> Response:
    """Create a provider account (it works once it has a token and a grant)."""
    return _create(
        request,
        veil,
        operator,
        PROVIDERS,
        lambda: tenants.create_provider(veil, operator, name),
        {"name": name},
    )


@router.post("/operator/officers", dependencies=[CsrfDep])
def create_officer(
    request: Request,
    veil: VeilDep,
    operator: OperatorDep,
    name: Annotated[str, Form()] = "",
    reach: Annotated[str, Form()] = "",
    scope: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Create a security officer over every enterprise, or only over those ticked."""
    values = {"name": name, "reach": reach, "scope": scope or []}

    def create() -> Principal:
        return tenants.create_security_officer(veil, operator, name, officer_scope(reach, scope))

    return _create(request, veil, operator, OFFICERS, create, values)


@router.post("/operator/bureau", dependencies=[CsrfDep])
def create_bureau(
    request: Request, veil: VeilDep, operator: OperatorDep, name: Annotated[str, Form()] = ""
) -> Response:
    """Create the programme's bureau; a second is refused (409) by the service, as in the API."""
    return _create(
        request,
        veil,
        operator,
        BUREAU,
        lambda: tenants.create_bureau(veil, operator, name),
        {"name": name},
    )


def officer_scope(reach: str, scope: list[str] | None) -> list[str] | None:
    """The officer's scope from the form: None (every enterprise, now and later) only when
    that was chosen explicitly; otherwise the enterprises ticked, at least one."""
    if reach == "all":
        return None
    if reach != "some":
        raise InvalidRequest(Msg("choose whether the officer oversees every enterprise or some"))
    chosen = sorted(set(scope or []))
    if not chosen:
        raise InvalidRequest(
            Msg("tick at least one enterprise, or choose that the officer oversees all of them")
        )
    return chosen


def _create(
    request: Request,
    veil: Veil,
    operator: Principal,
    kind: Kind,
    create: Callable[[], Principal],
    values: dict[str, Any],
) -> Response:
    try:
        created = create()
    except (VeilError, KeysError) as exc:
        failed = Failed(_error(exc, Msg("Not created: {reason}", reason=_message(exc))), values)
        return _listing(request, veil, operator, kind, failed=failed, status_code=status_for(exc))
    notice = translate(
        Msg(
            "{name} is created, with id {id}. Issue its first API token from its row below.",
            name=created.name,
            id=created.id,
        )
    )
    response = RedirectResponse(f"{BASE}/{kind.slug}#principal-{created.id}", status_code=303)
    response.set_cookie(
        NOTICE_COOKIE,
        base64.urlsafe_b64encode(notice.encode()).decode(),
        path=BASE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=120,
    )
    return response


# -- tokens ---------------------------------------------------------------------------------------


@router.post("/operator/tokens", dependencies=[CsrfDep])
def issue_token(
    request: Request,
    veil: VeilDep,
    operator: OperatorDep,
    principal_id: Annotated[str, Form()] = "",
    ttl_days: Annotated[str, Form()] = "",
) -> Response:
    """Issue an API token for any principal: shown on this page, this once (audited)."""
    owner = _principal(veil, principal_id)
    back = _back(owner)
    try:
        issued = tokens.issue(veil, operator, principal_id, _days(ttl_days))
    except (VeilError, KeysError) as exc:
        error = _error(exc, Msg("No token issued: {reason}", reason=_message(exc)))
        return page(
            request,
            "operator_token.html",
            operator,
            status_code=status_for(exc),
            error=error,
            new_token=None,
            back=back,
        )
    return page(
        request,
        "operator_token.html",
        operator,
        status_code=201,
        error=None,
        new_token={
            "secret": issued.secret,
            "id": issued.record.id,
            "expires_at": issued.record.expires_at,
            "principal_name": owner.name if owner else principal_id,
        },
        back=back,
    )


def _days(text: str) -> int | None:
    """The lifetime typed in days (empty: the default); ``tokens.issue`` checks its range."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise InvalidRequest(Msg("the lifetime must be a whole number of days, or left empty"))
    return int(text)


def _back(owner: Principal | None) -> str:
    """The page listing this principal's kind (or the enterprises, if it is not known)."""
    kind = KINDS.get(Role(owner.role)) if owner else None
    return f"{BASE}/{(kind or ENTERPRISES).slug}"


def _principal(veil: Veil, principal_id: str) -> Principal | None:
    if not principal_id:
        return None
    with veil.db.read() as session:
        return session.get(Principal, principal_id)


# -- rendering ------------------------------------------------------------------------------------


def _listing(
    request: Request,
    veil: Veil,
    operator: Principal,
    kind: Kind,
    *,
    failed: Failed | None = None,
    status_code: int = 200,
) -> Response:
    principals = tenants.list_principals(veil, operator, kind.role)
    context: dict[str, Any] = {}
    if kind is ENTERPRISES:
        context["size_bands"] = [band.value for band in SizeBand]
    if kind is not ENTERPRISES:  # officers are scoped to enterprises; names for their ids
        enterprises = tenants.list_principals(veil, operator, Role.ENTERPRISE)
        context["enterprises"] = enterprises
        context["enterprise_names"] = {e.id: e.name for e in enterprises}
    notice = _read_notice(request) if request.method == "GET" else None
    response = page(
        request,
        kind.template,
        operator,
        status_code=status_code,
        principals=principals,
        failed=failed,
        values=failed.values if failed else {},
        notice=notice,
        **context,
    )
    if request.cookies.get(NOTICE_COOKIE) is not None and request.method == "GET":
        response.delete_cookie(NOTICE_COOKIE, path=BASE)
    return response


def _message(exc: Exception) -> str:
    """The error's message in the reader's language (a Msg is translated, else as it is)."""
    if isinstance(exc, VeilError):
        return translate(exc.message)
    return str(error_text(exc)["message"])


def _error(exc: Exception, message: str) -> dict[str, Any]:
    error = error_text(exc)
    error["message"] = translate(message)
    return error


def _read_notice(request: Request) -> str | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        return base64.urlsafe_b64decode(raw.encode()).decode()[:1000]
    except (binascii.Error, UnicodeDecodeError):
        return None
