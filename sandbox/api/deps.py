"""Request dependencies: the running core, and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request

from i18n import Msg
from policies import audit
from policies.errors import Unauthenticated
from policies.principals import Principal
from sandbox.accounts.tokens import authenticate
from sandbox.api.limits import AUTH_FAILED
from sandbox.runtime.veil import Veil


async def get_veil(request: Request) -> Veil:
    """The running core.  ``async`` because it only reads an attribute: a sync dependency
    would cost a trip through the thread pool on every request."""
    veil: Veil = request.app.state.veil
    return veil


async def current_principal(
    request: Request, veil: Annotated[Veil, Depends(get_veil)]
) -> Principal:
    """Authenticate the bearer token; a failure is audited, then answered 401.

    Checked against the database on every request (nothing cached), so a revoked or
    expired token or a suspended account is refused at once, in every API process; one
    read that does not queue behind writers, without a trip through the thread pool on
    SQLite (``Database.read_row``).  The token's id is kept on the request
    (``request.state.token_id``) for listings to mark it.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise Unauthenticated(Msg("send 'Authorization: Bearer <token>'"))
        credential = await authenticate(veil, token.strip())
    except Unauthenticated as exc:
        await anyio.to_thread.run_sync(record_failed_login, veil, request, str(exc))
        raise
    request.state.token_id = credential.token_id
    return credential.principal


def record_failed_login(veil: Veil, request: Request, reason: str) -> None:
    """Audit a failed authentication (API or console): where, why, and from which address.

    Also flags the request, so that the address's failed-login limit counts it even where
    the answer is not a 401 (a stale console cookie is redirected to the login page)."""
    request.scope[AUTH_FAILED] = True
    with veil.db.transaction() as session:
        audit.record(
            session,
            "auth.failed",
            outcome=audit.Outcome.DENIED,
            resource=f"{request.method} {request.url.path}"[:120],
            details={"reason": reason, "client": request.client.host if request.client else None},
        )


VeilDep = Annotated[Veil, Depends(get_veil)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
