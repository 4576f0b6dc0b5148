"""API tokens in the console: every principal lists, rotates and revokes its own tokens; the
operator everyone's (the same services as ``/v1/tokens``: another's token is "not found").

A revocation redirects (303) to the page with a notice; revoking the session's own token
ends the session.  A rotation answers with the page itself, the new token shown once (it
is never put in a cookie other than the session's, nor in a URL); rotating the session's
own token moves the session to the new one.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from i18n.catalog import gettext
from policies.errors import VeilError
from policies.principals import Principal
from sandbox.accounts import tokens
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console.render import error_text, page
from sandbox.console.session import (
    COOKIE,
    PREFIX,
    CsrfDep,
    PrincipalDep,
    renew_session,
    set_session_cookie,
)
from sandbox.runtime.veil import Veil

router = APIRouter()

TOKENS = f"{PREFIX}/tokens"
#: A one-time notice of what a revocation did, shown after the redirect.
NOTICE_COOKIE = "veil_tokens_notice"


@router.get("/tokens")
def tokens_page(request: Request, veil: VeilDep, principal: PrincipalDep) -> Response:
    """The tokens this principal may act on, each with its rotate and revoke forms."""
    response = _tokens(request, veil, principal, notice=_read_notice(request))
    if request.cookies.get(NOTICE_COOKIE) is not None:
        response.delete_cookie(NOTICE_COOKIE, path=TOKENS)
    return response


@router.post("/tokens/{token_id}/revoke", dependencies=[CsrfDep])
def revoke(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    token_id: str,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Revoke a token: refused from the next request on, in every API process (audited)."""
    try:
        view = tokens.revoke(veil, principal, token_id, reason.strip() or None)
    except VeilError as exc:
        failed = _failed(token_id, "revoke", exc, reason=reason)
        return _tokens(request, veil, principal, failed=failed, status_code=status_for(exc))
    if view.id == _session_token_id(request):
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response
    response = RedirectResponse(TOKENS, status_code=303)
    notice = gettext("Token {id} of {name} is revoked: it is refused from now on.").format(
        id=view.id, name=view.principal_name
    )
    response.set_cookie(
        NOTICE_COOKIE,
        base64.urlsafe_b64encode(notice.encode()).decode(),
        path=TOKENS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=120,
    )
    return response


@router.post("/tokens/{token_id}/rotate", dependencies=[CsrfDep])
def rotate(request: Request, veil: VeilDep, principal: PrincipalDep, token_id: str) -> Response:
    """Replace a token: the new one is shown once on this page, the old one revoked at once."""
    try:
        rotated = tokens.rotate(veil, principal, token_id)
    except VeilError as exc:
        failed = _failed(token_id, "rotate", exc)
        return _tokens(request, veil, principal, failed=failed, status_code=status_for(exc))
    own_session = rotated.replaced.id == _session_token_id(request)
    if own_session:  # the session moves to the new token; the page is rendered for it
        request.state.token_id = rotated.issued.record.id
        renew_session(request, rotated.issued.secret)
    response = _tokens(
        request,
        veil,
        principal,
        new_token={
            "secret": rotated.issued.secret,
            "id": rotated.issued.record.id,
            "replaces": rotated.replaced.id,
            "expires_at": rotated.issued.record.expires_at,
            "principal_name": rotated.replaced.principal_name,
            "own_session": own_session,
        },
    )
    if own_session:
        set_session_cookie(response, request, rotated.issued.secret)
    return response


def _tokens(
    request: Request,
    veil: Veil,
    principal: Principal,
    *,
    notice: str | None = None,
    failed: dict[str, Any] | None = None,
    new_token: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    views = tokens.list_tokens(veil, principal)
    return page(
        request,
        "tokens.html",
        principal,
        status_code=status_code,
        tokens=views,
        current=_session_token_id(request),
        failed=failed,
        failed_elsewhere=failed is not None and all(v.id != failed["token_id"] for v in views),
        new_token=new_token,
        notice=notice,
    )


def _failed(token_id: str, action: str, exc: Exception, reason: str = "") -> dict[str, Any]:
    error = error_text(exc)
    not_done = (
        gettext("Not revoked: {reason}") if action == "revoke" else gettext("Not rotated: {reason}")
    )
    error["message"] = not_done.format(reason=error["message"])
    return {"token_id": token_id, "action": action, "reason": reason, "error": error}


def _session_token_id(request: Request) -> str | None:
    token_id = getattr(request.state, "token_id", None)
    return token_id if isinstance(token_id, str) else None


def _read_notice(request: Request) -> str | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        return base64.urlsafe_b64decode(raw.encode()).decode()[:1000]
    except (binascii.Error, UnicodeDecodeError):
        return None
