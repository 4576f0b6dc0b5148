"""Principals (who acts), their roles, and their API tokens (random, shown once, stored hashed).

Every token expires (``expires_at``) and can be revoked (``revoked_at``); both are checked
against the database on every request, so neither waits for a cache to run out.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, bindparam, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from i18n import Msg
from policies.db import Base, UTCDateTime, new_id, utcnow
from policies.errors import Conflict, InvalidRequest, Unauthenticated

TOKEN_PREFIX = "veil_"  # noqa: S105 - a prefix, not a token
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")


class Role(enum.StrEnum):
    OPERATOR = "operator"
    ENTERPRISE = "enterprise"
    PROVIDER = "provider"
    SECURITY_OFFICER = "security_officer"
    BUREAU = "bureau"  # the city's industry bureau (工信局): the programme's aggregates
    ASSESSOR = "assessor"  # a third-party assessor the bureau registered: scores providers


class Status(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Principal(Base):
    """Someone who calls Veil. An enterprise principal is also a tenant."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # Enterprises only: the tenant id in the key server (namespace name).
    slug: Mapped[str | None] = mapped_column(String(48), unique=True)
    status: Mapped[str] = mapped_column(String(12), default=Status.ACTIVE)
    # Security officers only: the enterprises overseen, or None for all.
    scope: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # Enterprises only: the public categories of the programme's tables (migration 0016;
    # ``sandbox.accounts.categories``), each unset until the operator sets it.
    industry: Mapped[str | None] = mapped_column(String(64), default=None)
    district: Mapped[str | None] = mapped_column(String(64), default=None)
    size_band: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def tenant_id(self) -> str | None:
        """The tenant this principal belongs to (enterprises only)."""
        return self.id if self.role == Role.ENTERPRISE else None

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "name": self.name}


class ApiToken(Base):
    """An API token's record: its hash and its life, never the token itself."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    #: When it last authenticated a request, to within :data:`LAST_USED_RESOLUTION`.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def state(self, now: datetime) -> TokenState:
        """Whether the token works at ``now``, and if not, why."""
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at <= now:
            return TokenState.EXPIRED
        return TokenState.ACTIVE


class TokenState(enum.StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


#: ``last_used_at`` is written at most this often per token: one write an hour instead of
#: one per request, which keeps authentication a read.
LAST_USED_RESOLUTION = timedelta(hours=1)


@dataclass(frozen=True)
class IssuedToken:
    """A token just made: its record, and its clear text (shown once, never stored)."""

    record: ApiToken
    secret: str


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def validate_slug(slug: str) -> str:
    if not _SLUG.fullmatch(slug):
        raise InvalidRequest(
            Msg(
                "slug must be 1-48 characters of lower-case letters, digits and "
                "inner hyphens, for example 'acme-metal'"
            )
        )
    return slug


def create_principal(
    session: Session,
    role: Role,
    name: str,
    *,
    slug: str | None = None,
    scope: list[str] | None = None,
) -> Principal:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidRequest(Msg("name must be 1-200 characters"))
    prefix = {
        "operator": "op",
        "enterprise": "ent",
        "provider": "prv",
        "security_officer": "so",
        "bureau": "bur",
        "assessor": "asr",
    }
    principal = Principal(
        id=new_id(prefix[role]),
        role=role,
        name=name,
        slug=validate_slug(slug) if slug is not None else None,
        scope=scope,
        status=Status.ACTIVE,
        created_at=utcnow(),
    )
    session.add(principal)
    session.flush()
    return principal


def issue_token(
    session: Session, principal: Principal, *, lifetime: timedelta, now: datetime | None = None
) -> IssuedToken:
    """Create a new token for ``principal`` that expires ``lifetime`` after ``now``; the clear
    text is returned once and never stored."""
    if lifetime <= timedelta(0):
        raise InvalidRequest(Msg("a token's lifetime must be positive"))
    created = now or utcnow()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        id=new_id("tok"),
        principal_id=principal.id,
        token_hash=hash_token(token),
        created_at=created,
        expires_at=created + lifetime,
    )
    session.add(record)
    session.flush()
    return IssuedToken(record, token)


# Built once: every API request runs it, and building a statement and its cache key each
# time costs about as much as the query itself.
_TOKEN_AND_OWNER = (
    select(ApiToken, Principal)
    .join(Principal, Principal.id == ApiToken.principal_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def authenticate(session: Session, token: str | None, *, now: datetime | None = None) -> Principal:
    """The active principal owning ``token``; :class:`Unauthenticated` otherwise."""
    return authenticate_token(session, token, now=now)[1]


def authenticate_token(
    session: Session, token: str | None, *, now: datetime | None = None
) -> tuple[ApiToken, Principal]:
    """The token's record and its active owner; :class:`Unauthenticated` when the token is
    unknown, revoked or expired at ``now``, or its owner is suspended.

    Nothing is cached: every call reads the token and its owner, so a revoked or expired
    token, or a suspended account, is refused from the next request on, in every process.
    """
    token_hash = lookup_hash(token)
    row = session.execute(_TOKEN_AND_OWNER, {"token_hash": token_hash}).first()
    return admit_token(None if row is None else (row[0], row[1]), now or utcnow())


def lookup_hash(token: str | None) -> str:
    """The hash to look ``token`` up by; :class:`Unauthenticated` for what cannot be a token."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthenticated()
    return hash_token(token)


def admit_token(
    found: tuple[ApiToken, Principal] | None, now: datetime
) -> tuple[ApiToken, Principal]:
    """``found`` (the token's record and its owner, as read now) if the token works at
    ``now`` and its owner is active; :class:`Unauthenticated` otherwise (also for None: no
    such token)."""
    if found is None:
        raise Unauthenticated()
    api_token, principal = found
    state = api_token.state(now)
    if state is TokenState.REVOKED:
        raise Unauthenticated(Msg("this API token was revoked; ask the operator for a new one"))
    if state is TokenState.EXPIRED:
        raise Unauthenticated(
            Msg(
                "this API token has expired; ask the operator for a new one "
                "(rotate tokens before they expire: `veil tokens list` shows "
                "when)"
            )
        )
    if principal.status != Status.ACTIVE:
        raise Unauthenticated(Msg("this account is suspended"))
    return api_token, principal


def revoke_token(record: ApiToken, now: datetime) -> None:
    """Mark ``record`` revoked at ``now``; :class:`Conflict` if it was revoked already."""
    if record.revoked_at is not None:
        raise Conflict(Msg("this token was revoked already; nothing changed"))
    record.revoked_at = now


def use_is_stale(record: ApiToken, now: datetime) -> bool:
    """Whether ``record``'s ``last_used_at`` is due to be written (see :func:`record_use`)."""
    return record.last_used_at is None or record.last_used_at <= now - LAST_USED_RESOLUTION


def record_use(session: Session, token_id: str, now: datetime) -> None:
    """Set the token's ``last_used_at`` to ``now`` unless another request (of any process)
    did so within :data:`LAST_USED_RESOLUTION`: a conditional update, so racing requests
    write it once."""
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(
                ApiToken.last_used_at.is_(None),
                ApiToken.last_used_at <= now - LAST_USED_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
    )
