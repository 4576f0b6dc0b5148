"""The bureau's front door: read one fixed table, audited (``sandbox.programme.tables``).

Every read is ``Capability.READ_PROGRAMME``'s, and every table is computed here from the
whole programme: there is no filter a caller could narrow to one enterprise.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from i18n import Msg
from policies import audit
from policies.budget import ledger_epsilon
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest
from policies.grants import BudgetDebit, Grant
from policies.principals import Principal, Role
from sandbox.accounts.categories import Category
from sandbox.data.liveness import daily_counts
from sandbox.programme.protection import Protector, load_secret
from sandbox.programme.tables import (
    BREAKDOWNS,
    TOTAL,
    Facts,
    JobFact,
    Table,
    TableName,
    VerdictFact,
    build,
)
from sandbox.runtime.veil import Veil
from sandbox.store.kpi_models import KpiContract, KpiVerdict, VerdictStatus
from sandbox.store.models import Dataset, Job
from sandbox.store.node_models import Node, NodeStatus
from sandbox.store.source_models import LivenessDay

#: At most this many months, the newest, in the activity tables.
MAX_MONTHS = 36


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def months_between(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` (YYYY-MM), at most the newest MAX_MONTHS."""
    year, month = int(first[:4]), int(first[5:])
    months = []
    while f"{year:04d}-{month:02d}" <= last:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months[-MAX_MONTHS:]


def read_table(
    veil: Veil,
    caller: Principal,
    name: str,
    by: str = TOTAL,
    settle: Callable[[Veil], object] | None = None,
) -> Table:
    """Table ``name`` broken down ``by`` one category or ``total`` (the bureau's), audited.

    ``settle`` (``sandbox.kpi.verdicts.settle_pending``, which this layer may not import)
    signs the KPI verdicts whose jobs have ended before the verdicts table counts them.
    """
    require(caller, Capability.READ_PROGRAMME)
    table = _table_name(name)
    if by not in BREAKDOWNS or (table is TableName.PROVIDERS and by != TOTAL):
        allowed = TOTAL if table is TableName.PROVIDERS else ", ".join(BREAKDOWNS)
        raise InvalidRequest(
            Msg(
                "the {table} table is broken down by one of: {allowed}",
                table=table.value,
                allowed=allowed,
            )
        )
    if table is TableName.VERDICTS and settle is not None:
        settle(veil)
    with veil.db.transaction() as session:
        protect = Protector(load_secret(session))
        facts = load_facts(session, veil.clock())
        built = build(table, facts, by, protect)
        audit.record(
            session,
            "programme.table_read",
            actor=caller,
            resource=f"programme:{table.value}",
            details={"by": by, "rows": len(built.rows)},
        )
    return built


def _table_name(name: str) -> TableName:
    try:
        return TableName(name)
    except ValueError:
        raise InvalidRequest(
            Msg(
                "there is no such programme table; the tables are {tables}",
                tables=", ".join(t.value for t in TableName),
            )
        ) from None


def load_facts(session: Session, now: datetime) -> Facts:
    """Everything the tables need, read in one transaction."""
    enrolled = list(session.scalars(select(Principal).where(Principal.role == Role.ENTERPRISE)))
    facts = Facts({p.id: {c: getattr(p, c.value) for c in Category} for p in enrolled})
    for enterprise_id, declaration in session.execute(
        select(Dataset.enterprise_id, Dataset.declaration)
    ):
        count, columns = facts.datasets.get(enterprise_id, (0, 0))
        declared = declaration.get("columns", []) if isinstance(declaration, dict) else []
        facts.datasets[enterprise_id] = (count + 1, columns + len(declared))
    for grant in session.scalars(select(Grant).where(Grant.revoked_at.is_(None))):
        if grant.active_at(now):
            facts.active_grants.add(grant.enterprise_id)
    facts.active_nodes = set(
        session.scalars(select(Node.enterprise_id).where(Node.status == NodeStatus.ACTIVE))
    )
    for enterprise_id, provider_id, status, created in session.execute(
        select(Job.enterprise_id, Job.provider_id, Job.status, Job.created_at)
    ):
        facts.jobs.append(JobFact(enterprise_id, provider_id, status, month_of(created)))
    # Each job's net ε (a refund follows its debit), in the month it was charged.
    charged = session.execute(
        select(
            Grant.enterprise_id,
            BudgetDebit.job_id,
            func.sum(BudgetDebit.epsilon),
            func.min(BudgetDebit.created_at),
        )
        .join(Grant, Grant.id == BudgetDebit.grant_id)
        .group_by(Grant.enterprise_id, BudgetDebit.job_id)
    )
    for enterprise_id, _job, units, first in charged:
        key = (enterprise_id, month_of(first))
        facts.spend[key] = facts.spend.get(key, 0.0) + ledger_epsilon(int(units))
    # Released (signed) KPI verdicts, in the month of their release, counted for the
    # enterprise whose KPI they judge.
    for enterprise_id, outcome, released in session.execute(
        select(KpiContract.enterprise_id, KpiVerdict.verdict, KpiVerdict.decided_at)
        .join(KpiContract, KpiContract.id == KpiVerdict.contract_id)
        .where(KpiVerdict.status == VerdictStatus.RELEASED)
    ):
        if outcome is not None and released is not None:
            facts.verdicts.append(VerdictFact(enterprise_id, outcome, month_of(released)))
    facts.equipment = _equipment(session, now)
    facts.providers = dict(
        session.execute(select(Principal.id, Principal.name).where(Principal.role == Role.PROVIDER))
        .tuples()
        .all()
    )
    # From the first enrolment on, not from the first activity: that a month shows up
    # must not say that someone was active in it.
    first = [month_of(p.created_at) for p in enrolled]
    first += [j.month for j in facts.jobs] + [m for _, m in facts.spend]  # none earlier
    first += [v.month for v in facts.verdicts] + [m for _, m in facts.equipment]
    facts.months = months_between(min(first, default=month_of(now)), month_of(now))
    return facts


def _equipment(session: Session, now: datetime) -> dict[tuple[str, str], tuple[float, float]]:
    """Each enterprise's equipment per month: the mean over the days it reported (finished
    days, UTC) of its daily devices configured and online. A node's enterprise counts as
    its node reported (``liveness_days``); a hosted one from the devices its sources, run
    here, watched (``sandbox.data.liveness``). A day a node reported wins over one counted
    here for the same enterprise."""
    days: dict[tuple[str, str], tuple[int, int]] = {
        (c.enterprise_id, c.day): (c.configured, c.online)
        for c in daily_counts(session, before=now.date())
    }
    for row in session.scalars(select(LivenessDay).where(LivenessDay.day < now.date().isoformat())):
        days[(row.enterprise_id, row.day)] = (row.configured, row.online)
    sums: dict[tuple[str, str], tuple[int, int, int]] = {}
    for (enterprise_id, day), (configured, online) in days.items():
        key = (enterprise_id, day[:7])
        n, c, o = sums.get(key, (0, 0, 0))
        sums[key] = (n + 1, c + configured, o + online)
    return {key: (c / n, o / n) for key, (n, c, o) in sums.items()}
