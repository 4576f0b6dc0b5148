"""API tokens: the operator issues them; each principal lists, revokes and rotates its own,
the operator everyone's (``sandbox/accounts/tokens.py``; another principal's token is 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from policies.principals import IssuedToken
from sandbox.accounts import tokens
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import ID_LENGTH, TokenIn, TokenInfoOut, TokenOut, TokenRevokeIn

router = APIRouter(prefix="/v1", tags=["tokens"])


def _issued(issued: IssuedToken, replaces: str | None = None) -> TokenOut:
    return TokenOut(
        principal_id=issued.record.principal_id,
        token=issued.secret,
        id=issued.record.id,
        expires_at=issued.record.expires_at,
        replaces=replaces,
    )


def _info(view: tokens.TokenView, request: Request) -> TokenInfoOut:
    return TokenInfoOut(
        id=view.id,
        principal_id=view.principal_id,
        principal_name=view.principal_name,
        principal_role=view.principal_role,
        created_at=view.created_at,
        expires_at=view.expires_at,
        last_used_at=view.last_used_at,
        revoked_at=view.revoked_at,
        state=view.state.value,
        current=view.id == getattr(request.state, "token_id", None),
    )


@router.post("/principals/{principal_id}/tokens", status_code=status.HTTP_201_CREATED)
def issue_token(
    principal_id: str, veil: VeilDep, caller: PrincipalDep, body: TokenIn | None = None
) -> TokenOut:
    """Issue an API token (operator); it is shown in this response only."""
    ttl = body.ttl_days if body is not None else None
    return _issued(tokens.issue(veil, caller, principal_id, ttl))


@router.get("/tokens")
def list_tokens(
    request: Request,
    veil: VeilDep,
    caller: PrincipalDep,
    principal_id: Annotated[str | None, Query(max_length=ID_LENGTH)] = None,
) -> list[TokenInfoOut]:
    """Tokens, newest first, without their secrets: your own; the operator's, everyone's
    (or one principal's)."""
    return [_info(v, request) for v in tokens.list_tokens(veil, caller, principal_id)]


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    token_id: str,
    request: Request,
    veil: VeilDep,
    caller: PrincipalDep,
    body: TokenRevokeIn | None = None,
) -> TokenInfoOut:
    """Revoke a token at once, in every API process (your own; the operator: anyone's)."""
    reason = body.reason if body is not None else None
    return _info(tokens.revoke(veil, caller, token_id, reason), request)


@router.post("/tokens/{token_id}/rotate", status_code=status.HTTP_201_CREATED)
def rotate_token(
    token_id: str, veil: VeilDep, caller: PrincipalDep, body: TokenIn | None = None
) -> TokenOut:
    """A new token for the same principal, shown once; the old one is revoked at once."""
    rotated = tokens.rotate(veil, caller, token_id, body.ttl_days if body is not None else None)
    return _issued(rotated.issued, replaces=rotated.replaced.id)
