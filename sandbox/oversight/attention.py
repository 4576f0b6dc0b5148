"""What needs a security officer's attention: denials, budget burn, held outputs, failed logins.

Operators and security officers read these views; a security officer with a
scope sees only the items of the enterprises it oversees.  Failed logins carry
no tenant (the token was not recognised, so nobody knows whose it was): only
operators and unscoped officers see them, and a scoped officer is told they
were left out.  Nothing here reads rows or results: the views are built from
the audit log, job metadata and the budget ledger, and reasons are shown as
texts (a held output's cell locations are blanked, as they name key values).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.budget import ledger_epsilon
from policies.capabilities import Capability, require, tenants_in_scope
from policies.errors import InvalidRequest
from policies.grants import BudgetDebit, Grant
from policies.principals import Principal, Role
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus

DEFAULT_PERIOD = timedelta(days=7)
TOP_REASONS = 5
MAX_PATHS = 10
_REASON_CHARS = 300
_CELL = re.compile(r"^cell [^:]*:")
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    count: int


@dataclass(frozen=True)
class ProviderDenials:
    """Denied attempts of one provider in the period, with its most frequent reasons."""

    provider_id: str
    provider_name: str
    count: int
    last_at: datetime
    reasons: tuple[ReasonCount, ...]


@dataclass(frozen=True)
class GrantBurn:
    """How much of one grant's ε budget is spent, in all and in the period."""

    grant_id: str
    provider_id: str
    provider_name: str
    enterprise_id: str
    enterprise_name: str
    dataset_ids: tuple[str, ...]
    epsilon_budget: float
    epsilon_spent: float
    fraction_used: float
    epsilon_spent_in_period: float
    jobs_in_period: int
    active: bool


@dataclass(frozen=True)
class HeldOutput:
    """A tier-5 output the output checks held, waiting for its enterprise's decision."""

    job_id: str
    provider_id: str
    enterprise_id: str | None
    held_since: datetime
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class FailedLogins:
    """Failed authentications from one client address in the period."""

    client: str | None
    count: int
    last_at: datetime
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Attention:
    """The four views, for the period from ``since`` to ``until``."""

    since: datetime
    until: datetime
    scope: tuple[str, ...] | None
    denied_by_provider: list[ProviderDenials] = field(default_factory=list)
    budget_burn: list[GrantBurn] = field(default_factory=list)
    held_outputs: list[HeldOutput] = field(default_factory=list)
    failed_logins: list[FailedLogins] = field(default_factory=list)
    failed_logins_included: bool = True


def attention(veil: Veil, caller: Principal, since: datetime | None = None) -> Attention:
    """The attention views since ``since`` (default: the last 7 days) for ``caller``'s tenants."""
    require(caller, Capability.READ_ATTENTION)
    now = veil.clock()
    if since is None:
        since = now - DEFAULT_PERIOD
    elif since.tzinfo is None:
        raise InvalidRequest(Msg("since needs a time zone, e.g. '2025-01-31T00:00:00Z'"))
    scope = tenants_in_scope(caller).as_list()
    with veil.db.transaction() as session:
        return Attention(
            since=since,
            until=now,
            scope=tuple(scope) if scope is not None else None,
            denied_by_provider=_denials(session, since, scope),
            budget_burn=_burn(session, since, now, scope),
            held_outputs=_held(session, scope),
            failed_logins=_failed_logins(session, since) if scope is None else [],
            failed_logins_included=scope is None,
        )


def _denials(session: Session, since: datetime, scope: list[str] | None) -> list[ProviderDenials]:
    """Events with outcome "denied" whose actor is a provider (job denials among them)."""
    event = audit.AuditEvent
    query = (
        select(event.actor_id, event.at, event.details, Principal.name)
        .join(Principal, Principal.id == event.actor_id)
        .where(
            event.outcome == audit.Outcome.DENIED,
            event.actor_role == Role.PROVIDER,
            event.at >= since,
        )
    )
    if scope is not None:
        query = query.where(event.tenant_id.in_(scope))
    counts: Counter[str] = Counter()
    last: dict[str, datetime] = {}
    names: dict[str, str] = {}
    reasons: dict[str, Counter[str]] = {}
    for actor_id, at, details, name in session.execute(query):
        counts[actor_id] += 1
        last[actor_id] = max(at, last.get(actor_id, at))
        names[actor_id] = name
        reasons.setdefault(actor_id, Counter()).update(_reason_texts(details))
    return [
        ProviderDenials(
            provider_id=provider_id,
            provider_name=names[provider_id],
            count=count,
            last_at=last[provider_id],
            reasons=tuple(
                ReasonCount(r, n) for r, n in reasons[provider_id].most_common(TOP_REASONS)
            ),
        )
        for provider_id, count in counts.most_common()
    ]


def _reason_texts(details: dict[str, Any]) -> list[str]:
    """The reason texts of an event's details (``reasons`` or ``reason``); nothing else."""
    found = details.get("reasons")
    texts = found if isinstance(found, list) else [details.get("reason")]
    return [_redact(t) for t in texts if isinstance(t, str) and t]


def _redact(reason: str) -> str:
    """A reason without key values: "cell shift=night: fewer than…" → "a cell: fewer than…"."""
    return _CELL.sub("a cell:", reason)[:_REASON_CHARS]


def _burn(
    session: Session, since: datetime, now: datetime, scope: list[str] | None
) -> list[GrantBurn]:
    """Grants that are active now or spent budget in the period, most used first."""
    spent = _pairs(
        session,
        select(BudgetDebit.grant_id, func.sum(BudgetDebit.epsilon))
        .where(BudgetDebit.created_at >= since)
        .group_by(BudgetDebit.grant_id),
    )
    jobs = _pairs(
        session,
        select(Job.grant_id, func.count(Job.id))
        .where(Job.created_at >= since, Job.status != JobStatus.DENIED)
        .group_by(Job.grant_id),
    )
    query = select(Grant)
    if scope is not None:
        query = query.where(Grant.enterprise_id.in_(scope))
    grants = [g for g in session.scalars(query) if g.active_at(now) or g.id in spent]
    names = _names(session, {g.provider_id for g in grants} | {g.enterprise_id for g in grants})
    rows = [
        GrantBurn(
            grant_id=g.id,
            provider_id=g.provider_id,
            provider_name=names.get(g.provider_id, ""),
            enterprise_id=g.enterprise_id,
            enterprise_name=names.get(g.enterprise_id, ""),
            dataset_ids=tuple(g.dataset_ids),
            epsilon_budget=g.budget_total.epsilon,
            epsilon_spent=g.budget_spent.epsilon,
            fraction_used=g.epsilon_spent / g.epsilon_budget if g.epsilon_budget else 0.0,
            epsilon_spent_in_period=ledger_epsilon(int(spent.get(g.id) or 0)),
            jobs_in_period=int(jobs.get(g.id) or 0),
            active=g.active_at(now),
        )
        for g in grants
    ]
    return sorted(rows, key=lambda r: (-r.fraction_used, -r.epsilon_spent_in_period, r.grant_id))


def _names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return _pairs(session, select(Principal.id, Principal.name).where(Principal.id.in_(ids)))


def _pairs(session: Session, query: Select[tuple[K, V]]) -> dict[K, V]:
    """A two-column query's rows as a dict."""
    return dict(session.execute(query).tuples().all())


def _held(session: Session, scope: list[str] | None) -> list[HeldOutput]:
    """Jobs whose output is held, oldest first, whenever they were held."""
    query = select(Job).where(Job.status == JobStatus.HELD).order_by(Job.created_at)
    if scope is not None:
        query = query.where(Job.enterprise_id.in_(scope))
    jobs = list(session.scalars(query))
    held_at = _pairs(
        session,
        select(audit.AuditEvent.resource, func.max(audit.AuditEvent.at))
        .where(
            audit.AuditEvent.action == "job.held",
            audit.AuditEvent.resource.in_([f"job:{j.id}" for j in jobs]),
        )
        .group_by(audit.AuditEvent.resource),
    )
    return [
        HeldOutput(
            job_id=job.id,
            provider_id=job.provider_id,
            enterprise_id=job.enterprise_id,
            held_since=held_at.get(f"job:{job.id}") or job.started_at or job.created_at,
            reasons=tuple(_reason_texts(job.output_check or {})),
        )
        for job in jobs
    ]


def _failed_logins(session: Session, since: datetime) -> list[FailedLogins]:
    """``auth.failed`` events in the period, grouped by the client's address."""
    rows = session.execute(
        select(audit.AuditEvent.at, audit.AuditEvent.resource, audit.AuditEvent.details).where(
            audit.AuditEvent.action == "auth.failed", audit.AuditEvent.at >= since
        )
    )
    counts: Counter[str | None] = Counter()
    last: dict[str | None, datetime] = {}
    paths: dict[str | None, list[str]] = {}
    for at, resource, details in rows:
        client = details.get("client")
        client = client if isinstance(client, str) else None
        counts[client] += 1
        last[client] = max(at, last.get(client, at))
        seen = paths.setdefault(client, [])
        if resource and resource not in seen and len(seen) < MAX_PATHS:
            seen.append(resource)
    return [
        FailedLogins(client, count, last[client], tuple(paths[client]))
        for client, count in counts.most_common()
    ]
