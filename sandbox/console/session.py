"""The console's session: the API token in an httpOnly cookie, and CSRF protection.

Logging in checks the token once and stores it in a cookie that scripts cannot
read (``HttpOnly``), that is sent only to ``/console`` and only from Veil's own
pages (``SameSite=Strict``), and only over TLS when the console is served over
TLS (``Secure``).  Nothing is kept in server memory, so any API process can
serve any request.

Every form that changes something carries a CSRF token (also sent as the
``X-CSRF-Token`` header by the console's script): an HMAC of a fixed label under
the session's own token, so only a page rendered for this session knows it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from i18n import Msg
from policies.errors import Unauthenticated, VeilError
from policies.principals import Principal
from sandbox.accounts.tokens import authenticate_request
from sandbox.api.deps import get_veil, record_failed_login
from sandbox.runtime.veil import Veil

COOKIE = "veil_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PREFIX = "/console"
#: A session lasts 8 hours (or less: the token's own expiry and revocation hold too).
SESSION_MAX_AGE_S = 8 * 3600
#: Where a request that moved its session to a new token keeps that token (request.state).
RENEWED = "renewed_session_token"


class LoginRequired(VeilError):
    """No console session, or its token no longer works: go to the login page."""


class CsrfRejected(VeilError):
    """A change without this session's CSRF token (403)."""


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"veil-console-csrf", hashlib.sha256).hexdigest()


def session_token(request: Request) -> str | None:
    """The session's token: the cookie's, or the one this request moved the session to (a
    rotation of the session's own token), so that the page it renders carries the new
    session's CSRF token."""
    renewed = getattr(request.state, RENEWED, None)
    return renewed if isinstance(renewed, str) else request.cookies.get(COOKIE)


def renew_session(request: Request, token: str) -> None:
    """This request moved the session to ``token``: pages it renders are for that session."""
    setattr(request.state, RENEWED, token)


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    """Keep ``token`` as this browser's session (at login, and after rotating its token)."""
    response.set_cookie(
        COOKIE,
        token,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_MAX_AGE_S,
    )


def console_principal(request: Request, veil: Annotated[Veil, Depends(get_veil)]) -> Principal:
    """The principal of this console session, or :class:`LoginRequired`.

    The token is checked against the database on every page, like an API request, so a
    revoked or expired token ends the session at once."""
    token = session_token(request)
    if not token:
        raise LoginRequired(Msg("log in with your API token"))
    try:
        credential = authenticate_request(veil, token)
    except Unauthenticated as exc:
        record_failed_login(veil, request, str(exc))
        raise LoginRequired(str(exc)) from None
    request.state.token_id = credential.token_id
    return credential.principal


async def require_csrf(request: Request) -> None:
    """Refuse a change whose CSRF token is missing or wrong, or that comes from elsewhere."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise CsrfRejected(Msg("this form was sent from another site; reload the page and retry"))
    token = session_token(request)
    sent = request.headers.get(CSRF_HEADER)
    # Only small url-encoded forms are read here: reading a multipart body would make
    # the form parser spool a large upload to a temporary file, in clear, before any
    # check.  Uploads come from the console's script, which sends the header.
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not token or not sent or not hmac.compare_digest(sent, csrf_token(token)):
        raise CsrfRejected(Msg("the form has expired or did not come from this session; reload it"))


PrincipalDep = Annotated[Principal, Depends(console_principal)]
CsrfDep = Depends(require_csrf)
