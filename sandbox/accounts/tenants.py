"""Operator actions: enterprises (tenants, with their keys), providers, officers.

Tokens are ``sandbox.accounts.tokens``'s."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from i18n import Msg
from keys import key_operation
from policies import audit
from policies.capabilities import Capability, may, require
from policies.errors import Conflict, Forbidden, InvalidRequest
from policies.principals import Principal, Role, create_principal, validate_slug
from sandbox.accounts import categories
from sandbox.accounts.categories import Category
from sandbox.runtime.veil import Veil


def require_reason(reason: str | None) -> str:
    """The stripped reason a change must give (1-500 characters), or InvalidRequest."""
    text = (reason or "").strip()
    if not 1 <= len(text) <= 500:
        raise InvalidRequest(
            Msg("say why (a reason of 1-500 characters); it goes into the audit log")
        )
    return text


def create_enterprise(
    veil: Veil,
    operator: Principal,
    name: str,
    slug: str,
    given: Mapping[Category, str | None] | None = None,
) -> Principal:
    """Create an enterprise and provision its key-server namespace and key first; ``given``:
    its public categories (``sandbox.accounts.categories``), if any are known."""
    require(operator, Capability.MANAGE_PRINCIPALS)
    validate_slug(slug)
    for category, value in (given or {}).items():
        categories.validate(category, value)  # before any key is made
    with veil.db.transaction() as session:
        if session.scalar(select(Principal.id).where(Principal.slug == slug)) is not None:
            raise Conflict(
                Msg(
                    "an enterprise with slug '{slug}' exists already; choose another",
                    slug=slug,
                )
            )
    # Keys first: an enterprise row never exists without its keys. Provisioning is
    # idempotent, so a failed database write below leaves nothing that a retry trips on.
    with key_operation(f"enterprise:{slug}/1"):  # names it in the key server's log
        veil.keys.create_tenant(slug)
    try:
        with veil.db.transaction() as session:
            enterprise = create_principal(session, Role.ENTERPRISE, name, slug=slug)
            set_now = {
                k: v for k, v in categories.apply(enterprise, given or {}).items() if v is not None
            }
            audit.record(
                session,
                "enterprise.created",
                actor=operator,
                tenant_id=enterprise.id,
                resource=f"principal:{enterprise.id}",
                details={"name": enterprise.name, "slug": slug, **set_now},
            )
    except IntegrityError:
        raise Conflict(
            Msg(
                "an enterprise with slug '{slug}' exists already",
                slug=slug,
            )
        ) from None
    return enterprise


def create_provider(veil: Veil, operator: Principal, name: str) -> Principal:
    require(operator, Capability.MANAGE_PRINCIPALS)
    with veil.db.transaction() as session:
        provider = create_principal(session, Role.PROVIDER, name)
        audit.record(
            session,
            "provider.created",
            actor=operator,
            resource=f"principal:{provider.id}",
            details={"name": provider.name},
        )
    return provider


def create_security_officer(
    veil: Veil, operator: Principal, name: str, scope: list[str] | None
) -> Principal:
    require(operator, Capability.MANAGE_PRINCIPALS)
    with veil.db.transaction() as session:
        for enterprise_id in scope or []:
            found = session.get(Principal, enterprise_id)
            if found is None or found.role != Role.ENTERPRISE:
                raise InvalidRequest(
                    Msg(
                        "scope names '{enterprise_id}', which is not an enterprise",
                        enterprise_id=enterprise_id,
                    )
                )
        officer = create_principal(session, Role.SECURITY_OFFICER, name, scope=scope)
        audit.record(
            session,
            "security_officer.created",
            actor=operator,
            resource=f"principal:{officer.id}",
            details={"name": officer.name, "scope": scope},
        )
    return officer


def create_bureau(veil: Veil, operator: Principal, name: str) -> Principal:
    """Create the programme's bureau (the city's 工信局): one per programme, so a second is
    a :class:`Conflict` (give the one there is another token instead)."""
    require(operator, Capability.MANAGE_PRINCIPALS)
    with veil.db.transaction() as session:
        if session.scalar(select(Principal.id).where(Principal.role == Role.BUREAU)) is not None:
            raise Conflict(
                Msg(
                    "this programme has its bureau already; issue it another token "
                    "(`veil tokens issue BUREAU_ID`) instead"
                )
            )
        bureau = create_principal(session, Role.BUREAU, name)
        audit.record(
            session,
            "bureau.created",
            actor=operator,
            resource=f"principal:{bureau.id}",
            details={"name": bureau.name},
        )
    return bureau


def list_principals(veil: Veil, caller: Principal, role: Role) -> list[Principal]:
    """Operators see everyone; enterprises may list providers (to grant to them)."""
    needed = Capability.LIST_PROVIDERS if role == Role.PROVIDER else Capability.MANAGE_PRINCIPALS
    if not may(caller, needed):
        raise Forbidden(Msg("you may not list these principals"))
    with veil.db.transaction() as session:
        rows = session.scalars(
            select(Principal).where(Principal.role == role).order_by(Principal.created_at)
        )
        return list(rows)
