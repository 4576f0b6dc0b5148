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

from fastapi import Depends, Request

from policies.errors import Unauthenticated, VeilError
from policies.principals import Principal, authenticate
from sandbox.api.deps import get_veil, record_failed_login
from sandbox.core import Veil

COOKIE = "veil_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PREFIX = "/console"


class LoginRequired(VeilError):
    """No console session, or its token no longer works: go to the login page."""


class CsrfRejected(VeilError):
    """A change without this session's CSRF token (403)."""


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"veil-console-csrf", hashlib.sha256).hexdigest()


def session_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE)


def console_principal(request: Request, veil: Annotated[Veil, Depends(get_veil)]) -> Principal:
    """The principal of this console session, or :class:`LoginRequired`."""
    token = session_token(request)
    if not token:
        raise LoginRequired("log in with your API token")
    try:
        with veil.db.transaction() as session:
            return authenticate(session, token)
    except Unauthenticated as exc:
        record_failed_login(veil, request, str(exc))
        raise LoginRequired(str(exc)) from None


async def require_csrf(request: Request) -> None:
    """Refuse a change whose CSRF token is missing or wrong, or that comes from elsewhere."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.url.netloc:
        raise CsrfRejected("this form was sent from another site; reload the page and retry")
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
        raise CsrfRejected("the form has expired or did not come from this session; reload it")


PrincipalDep = Annotated[Principal, Depends(console_principal)]
CsrfDep = Depends(require_csrf)
