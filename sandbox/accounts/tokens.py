"""API tokens: the operator issues them; each principal lists, revokes and rotates its own,
and the operator everyone's (``docs/api.md``, "Tokens").

Every token expires (``VEIL_TOKEN_TTL_DAYS`` after it was issued, 90 days by default).
Authentication reads the token's row and its owner's on every request
(:func:`authenticate_request`, or :func:`authenticate` in the API's async dependency), in
whichever API process the request reaches, so a revocation, an expiry or a suspension
holds from the next request on everywhere: no process keeps a copy that could outlive it.

Another principal's token is answered 404, exactly like an unknown id, so no principal
learns which token ids exist; only the operator reaches every token.  Every change is
audited in the same transaction (``token.issued``, ``token.revoked``, ``token.rotated``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, may, require
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import (
    ApiToken,
    IssuedToken,
    Principal,
    Role,
    Status,
    TokenState,
    admit_token,
    authenticate_token,
    issue_token,
    lookup_hash,
    record_use,
    revoke_token,
    use_is_stale,
)
from sandbox.accounts.tenants import require_reason
from sandbox.config.settings import Settings
from sandbox.runtime.veil import Veil
from sandbox.store.rows import RowQuery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenView:
    """What a listing shows of a token: its metadata, never the token or its hash."""

    id: str
    principal_id: str
    principal_name: str
    principal_role: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    state: TokenState


@dataclass(frozen=True)
class Credential:
    """Who a request authenticated as, and with which token."""

    principal: Principal
    token_id: str


@dataclass(frozen=True)
class Rotated:
    """A rotation's outcome: the new token (shown once) and the one it revoked."""

    issued: IssuedToken
    replaced: TokenView


def lifetime(settings: Settings, days: int | None) -> timedelta:
    """A new token's lifetime: ``days`` when asked for (1 to ``VEIL_TOKEN_MAX_TTL_DAYS``),
    else ``VEIL_TOKEN_TTL_DAYS``."""
    if days is None:
        return timedelta(days=settings.token_ttl_days)
    if not 1 <= days <= settings.token_max_ttl_days:
        raise InvalidRequest(
            Msg(
                "ttl_days must be between 1 and {token_max_ttl_days} (the "
                "operator's VEIL_TOKEN_MAX_TTL_DAYS)",
                token_max_ttl_days=settings.token_max_ttl_days,
            )
        )
    return timedelta(days=days)


def authenticate_request(veil: Veil, token: str | None) -> Credential:
    """The principal ``token`` belongs to, read from the database now (see the module's
    docstring); :class:`~policies.errors.Unauthenticated` otherwise.

    Records when the token was last used, at most once an hour per token, in a short write
    of its own: a failure there is logged and does not refuse the request.
    """
    now = veil.clock()
    with veil.db.read() as session:
        record, principal = authenticate_token(session, token, now=now)
    if use_is_stale(record, now):
        _record_use(veil, record.id, now)
    return Credential(principal, record.id)


def _token_and_owner(query: Select[Any]) -> Select[Any]:
    return query.join_from(ApiToken, Principal, Principal.id == ApiToken.principal_id).where(
        ApiToken.token_hash == bindparam("token_hash")
    )


_TOKEN_AND_OWNER = RowQuery((ApiToken, Principal), _token_and_owner)


async def authenticate(veil: Veil, token: str | None) -> Credential:
    """:func:`authenticate_request` for async code: the same checks on the same rows, read
    now (:meth:`~sandbox.store.database.Database.read_row`: one statement, no session)."""
    now = veil.clock()
    row = await veil.db.read_row(_TOKEN_AND_OWNER, {"token_hash": lookup_hash(token)})
    record, principal = admit_token(row, now)
    if use_is_stale(record, now):
        await anyio.to_thread.run_sync(_record_use, veil, record.id, now)
    return Credential(principal, record.id)


def _record_use(veil: Veil, token_id: str, now: datetime) -> None:
    try:
        with veil.db.transaction() as session:
            record_use(session, token_id, now)
    except SQLAlchemyError:
        log.warning("could not record the use of token %s", token_id, exc_info=True)


def issue(
    veil: Veil, operator: Principal, principal_id: str, ttl_days: int | None = None
) -> IssuedToken:
    """A new token for ``principal_id`` (operator only); its secret is returned once."""
    require(operator, Capability.ISSUE_TOKENS)
    span = lifetime(veil.settings, ttl_days)
    with veil.db.transaction() as session:
        principal = session.get(Principal, principal_id)
        if principal is None:
            raise NotFound("principal", principal_id)
        issued = issue_token(session, principal, lifetime=span, now=veil.clock())
        _audit_issue(session, "token.issued", operator, principal, issued)
    return issued


def list_tokens(veil: Veil, caller: Principal, principal_id: str | None = None) -> list[TokenView]:
    """Tokens, newest first: the operator's choice of everyone's (or ``principal_id``'s);
    anyone else's own only (naming another principal is 404)."""
    if not may(caller, Capability.MANAGE_ALL_TOKENS):
        if principal_id not in (None, caller.id):
            raise NotFound("principal", str(principal_id))
        principal_id = caller.id
    query = (
        select(ApiToken, Principal)
        .join(Principal, Principal.id == ApiToken.principal_id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id)
    )
    if principal_id is not None:
        query = query.where(ApiToken.principal_id == principal_id)
    now = veil.clock()
    with veil.db.read() as session:
        if principal_id is not None and session.get(Principal, principal_id) is None:
            raise NotFound("principal", principal_id)
        return [_view(token, owner, now) for token, owner in session.execute(query).tuples()]


def revoke(veil: Veil, caller: Principal, token_id: str, reason: str | None = None) -> TokenView:
    """Revoke a token now (its owner or the operator); refused from the next request on."""
    why = require_reason(reason) if reason is not None else None
    now = veil.clock()
    with veil.db.transaction() as session:
        record, owner = _reachable(session, caller, token_id)
        revoke_token(record, now)
        audit.record(
            session,
            "token.revoked",
            actor=caller,
            tenant_id=owner.tenant_id,
            resource=f"token:{record.id}",
            details={"principal_id": owner.id, "reason": why},
        )
        return _view(record, owner, now)


def rotate(veil: Veil, caller: Principal, token_id: str, ttl_days: int | None = None) -> Rotated:
    """A new token for the same principal, and the old one revoked in the same transaction
    (no grace period: see docs/api.md, "Tokens"); the new secret is returned once."""
    span = lifetime(veil.settings, ttl_days)
    now = veil.clock()
    with veil.db.transaction() as session:
        record, owner = _reachable(session, caller, token_id)
        state = record.state(now)
        if state is not TokenState.ACTIVE:
            raise Conflict(
                Msg(
                    "this token is {state}: only a working token can be rotated; ask "
                    "the operator to issue a new one (veil tokens issue)",
                    state=state,
                )
            )
        revoke_token(record, now)
        issued = issue_token(session, owner, lifetime=span, now=now)
        _audit_issue(session, "token.rotated", caller, owner, issued, replaces=record.id)
        return Rotated(issued, _view(record, owner, now))


def recover_operator_token(veil: Veil) -> IssuedToken | None:
    """A new token for the first active operator, for ``veil init --new-operator-token`` on
    the server's machine (when every operator token is lost, revoked or expired); None if
    there is no active operator.  Audited like any issue, with how it was made."""
    with veil.db.transaction() as session:
        operator = session.scalars(
            select(Principal)
            .where(Principal.role == Role.OPERATOR, Principal.status == Status.ACTIVE)
            .order_by(Principal.created_at)
        ).first()
        if operator is None:
            return None
        span = lifetime(veil.settings, None)
        issued = issue_token(session, operator, lifetime=span, now=veil.clock())
        _audit_issue(session, "token.issued", None, operator, issued, via="veil init")
    return issued


def _reachable(session: Session, caller: Principal, token_id: str) -> tuple[ApiToken, Principal]:
    """The token and its owner, if ``caller`` may act on it: its own, or any for the
    operator.  Anyone else's is :class:`NotFound`, the same answer as an unknown id."""
    record = session.get(ApiToken, token_id)
    if record is None or (
        not may(caller, Capability.MANAGE_ALL_TOKENS) and record.principal_id != caller.id
    ):
        raise NotFound("token", token_id)
    owner = session.get(Principal, record.principal_id)
    if owner is None:  # the foreign key forbids it; never answer with another's token
        raise NotFound("token", token_id)
    return record, owner


def _audit_issue(
    session: Session,
    action: str,
    actor: Principal | None,
    owner: Principal,
    issued: IssuedToken,
    *,
    replaces: str | None = None,
    via: str | None = None,
) -> None:
    details: dict[str, str] = {
        "principal_id": owner.id,
        "expires_at": issued.record.expires_at.isoformat(),
    }
    if replaces is not None:
        details["revoked_token_id"] = replaces
    if via is not None:
        details["via"] = via
    audit.record(
        session,
        action,
        actor=actor,
        tenant_id=owner.tenant_id,
        resource=f"token:{issued.record.id}",
        details=details,
    )


def _view(record: ApiToken, owner: Principal, now: datetime) -> TokenView:
    return TokenView(
        id=record.id,
        principal_id=owner.id,
        principal_name=owner.name,
        principal_role=owner.role,
        created_at=record.created_at,
        expires_at=record.expires_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
        state=record.state(now),
    )
