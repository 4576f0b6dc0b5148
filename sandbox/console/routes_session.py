"""Logging in and out, and the home page of each role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from i18n.catalog import gettext, translate
from policies.errors import Unauthenticated
from sandbox.accounts.tokens import authenticate_request
from sandbox.api.deps import VeilDep, record_failed_login
from sandbox.console.render import NAV, page
from sandbox.console.session import (
    COOKIE,
    PREFIX,
    CsrfDep,
    PrincipalDep,
    set_session_cookie,
)

router = APIRouter()


@router.get("/")
def home(principal: PrincipalDep) -> Response:
    """Each role starts on its first page."""
    return RedirectResponse(NAV[principal.role][0][0], status_code=303)


@router.get("/login")
def login_form(request: Request, next: str = PREFIX + "/") -> Response:
    return page(request, "login.html", None, next_path=_safe_next(next), error=None)


@router.post("/login")
def login(
    request: Request,
    veil: VeilDep,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = PREFIX + "/",
) -> Response:
    """Check the token once, then keep it in an httpOnly, same-site cookie."""
    token = token.strip()
    try:
        authenticate_request(veil, token)
    except Unauthenticated as exc:
        record_failed_login(veil, request, str(exc))
        reason = translate(exc.message)
        message = gettext("That token does not work: {reason}.").format(reason=reason)
        error = {"message": message, "reasons": []}
        return page(
            request, "login.html", None, status_code=401, next_path=_safe_next(next), error=error
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    set_session_cookie(response, request, token)
    return response


@router.post("/logout", dependencies=[CsrfDep])
def logout() -> Response:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def _safe_next(target: str) -> str:
    """Only a console path: never a redirect to another site."""
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"
