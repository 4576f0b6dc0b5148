"""The bureau's fixed tables: what each shows, computed from the programme's facts.

There are no free filters: a table is chosen by name, broken down by **one** public
category (``industry``, ``district`` or ``size_band``) or by none (``total``), and, for
activity, by calendar month (UTC).  Every breakdown ends with its total row.  Every figure
that aggregates enterprises passes ``sandbox.programme.protection``; the provider table is
about providers (their own activity, not broken down by enterprise) and is exact.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from sandbox.accounts.categories import Category
from sandbox.programme.protection import Cell, Protector, ratio, share


class TableName(enum.StrEnum):
    PARTICIPATION = "participation"
    COVERAGE = "coverage"
    JOBS = "jobs"
    BUDGET = "budget"
    VERDICTS = "verdicts"
    PROVIDERS = "providers"
    EQUIPMENT = "equipment"


#: The breakdowns: one category at a time, or the total alone.
TOTAL: Final = "total"
BREAKDOWNS: Final = (TOTAL, *(c.value for c in Category))

#: Job statuses as the tables group them.
_PENDING = ("queued", "running", "held")
JOB_COLUMNS: Final = ("submitted", "released", "failed", "denied", "pending")
#: A KPI verdict's outcomes (``docs/verdicts.md``), each a column of the verdicts table.
VERDICT_OUTCOMES: Final = ("met", "not_met", "inconclusive")
#: The equipment online rate (设备联网率, ``sandbox.data.liveness``).
EQUIPMENT_COLUMNS: Final = (
    "enterprises_reporting",
    "devices_configured",
    "devices_online",
    "online_rate",
)


@dataclass(frozen=True)
class JobFact:
    enterprise_id: str | None  # None: the job named a dataset its provider may not know
    provider_id: str
    status: str
    month: str  # YYYY-MM, UTC, of its submission


@dataclass(frozen=True)
class VerdictFact:
    """A signed KPI verdict: the enterprise whose KPI it judges, its outcome, its month."""

    enterprise_id: str
    verdict: str  # met, not_met or inconclusive
    month: str  # YYYY-MM, UTC, of its release


@dataclass
class Facts:
    """What the tables are computed from (``sandbox.programme.service`` reads it)."""

    #: Each enterprise's categories (None: not set).
    enterprises: dict[str, dict[Category, str | None]]
    #: Per enterprise with datasets: (datasets, declared columns).
    datasets: dict[str, tuple[int, int]] = field(default_factory=dict)
    active_grants: set[str] = field(default_factory=set)
    active_nodes: set[str] = field(default_factory=set)
    jobs: list[JobFact] = field(default_factory=list)
    #: ε spent, net of refunds, per (enterprise, month).
    spend: dict[tuple[str, str], float] = field(default_factory=dict)
    verdicts: list[VerdictFact] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)  # id -> name
    #: The equipment online rate per (enterprise, month): the mean over the days it
    #: reported in the month of its daily (devices configured, devices online).
    equipment: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    months: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """One row: its month (activity tables), its group, and its figures."""

    group: str | None  # the category's value; None: not set (or the provider's id)
    values: dict[str, Cell]
    month: str | None = None
    total: bool = False
    label: str | None = None  # the provider's name (provider table)


@dataclass(frozen=True)
class Table:
    name: TableName
    by: str
    columns: tuple[str, ...]
    rows: list[Row]

    @property
    def protected(self) -> bool:
        """Whether its figures aggregate enterprises (and pass the protection rule)."""
        return self.name is not TableName.PROVIDERS


COLUMNS: Final[Mapping[TableName, tuple[str, ...]]] = {
    TableName.PARTICIPATION: (
        "enterprises",
        "with_datasets",
        "with_active_grants",
        "with_active_node",
    ),
    TableName.COVERAGE: (
        "enterprises_with_datasets",
        "datasets",
        "declared_columns",
        "datasets_per_enterprise",
        "columns_per_dataset",
    ),
    TableName.JOBS: JOB_COLUMNS,
    TableName.BUDGET: ("enterprises_spending", "epsilon_spent"),
    TableName.VERDICTS: ("enterprises_with_verdicts", "verdicts", *VERDICT_OUTCOMES),
    TableName.PROVIDERS: JOB_COLUMNS,
    TableName.EQUIPMENT: EQUIPMENT_COLUMNS,
}


def groups(facts: Facts, by: str) -> list[tuple[str | None, bool, set[str]]]:
    """(value, is the total, its enterprises) for each row of a breakdown ``by``: each
    value in order, "not set" last, then the total."""
    everyone = set(facts.enterprises)
    if by == TOTAL:
        return [(None, True, everyone)]
    category = Category(by)
    members: dict[str | None, set[str]] = {}
    for enterprise_id, categories in facts.enterprises.items():
        members.setdefault(categories.get(category), set()).add(enterprise_id)
    order: list[str | None] = sorted((v for v in members if v is not None), key=str)
    if None in members:
        order.append(None)
    return [(value, False, members[value]) for value in order] + [(None, True, everyone)]


def _label(table: TableName, figure: str, month: str | None = None) -> str:
    return f"{table.value}.{figure}:{month or '-'}"


def participation(facts: Facts, by: str, protect: Protector) -> Table:
    t = TableName.PARTICIPATION
    rows = []
    for value, total, members in groups(facts, by):
        rows.append(
            Row(
                value,
                {
                    "enterprises": protect.count(_label(t, "enterprises"), members),
                    "with_datasets": protect.count(
                        _label(t, "with_datasets"), members & set(facts.datasets)
                    ),
                    "with_active_grants": protect.count(
                        _label(t, "with_active_grants"), members & facts.active_grants
                    ),
                    "with_active_node": protect.count(
                        _label(t, "with_active_node"), members & facts.active_nodes
                    ),
                },
                total=total,
            )
        )
    return Table(t, by, COLUMNS[t], rows)


def coverage(facts: Facts, by: str, protect: Protector) -> Table:
    t = TableName.COVERAGE
    rows = []
    for value, total, members in groups(facts, by):
        held = {e: facts.datasets[e] for e in members if e in facts.datasets}
        holders = protect.count(_label(t, "enterprises_with_datasets"), set(held))
        datasets = protect.total(
            _label(t, "datasets"), {e: n for e, (n, _) in held.items()}, whole=True
        )
        columns = protect.total(
            _label(t, "declared_columns"), {e: c for e, (_, c) in held.items()}, whole=True
        )
        values = {
            "enterprises_with_datasets": holders,
            "datasets": datasets,
            "declared_columns": columns,
            "datasets_per_enterprise": ratio(datasets, holders),
            "columns_per_dataset": ratio(columns, datasets),
        }
        rows.append(Row(value, values, total=total))
    return Table(t, by, COLUMNS[t], rows)


def _job_counts(
    jobs: Iterable[JobFact], key: Callable[[JobFact], str | None]
) -> dict[str | None, dict[str, int]]:
    """Per ``key`` (enterprise or provider), per column: how many jobs."""
    counts: dict[str | None, dict[str, int]] = {}
    for job in jobs:
        mine = counts.setdefault(key(job), dict.fromkeys(JOB_COLUMNS, 0))
        mine["submitted"] += 1
        column = "pending" if job.status in _PENDING else job.status
        if column in mine:
            mine[column] += 1
    return counts


def _jobs_by_month(facts: Facts) -> dict[str, list[JobFact]]:
    grouped: dict[str, list[JobFact]] = {}
    for job in facts.jobs:
        grouped.setdefault(job.month, []).append(job)
    return grouped


def jobs(facts: Facts, by: str, protect: Protector) -> Table:
    t = TableName.JOBS
    rows = []
    by_month = _jobs_by_month(facts)
    for month in facts.months:
        counted = _job_counts(
            (j for j in by_month.get(month, []) if j.enterprise_id is not None),
            lambda j: j.enterprise_id,
        )
        for value, total, members in groups(facts, by):
            values = {
                column: protect.total(
                    _label(t, column, month),
                    {e: counted[e][column] for e in members if e in counted},
                    whole=True,
                )
                for column in JOB_COLUMNS
            }
            rows.append(Row(value, values, month=month, total=total))
    return Table(t, by, COLUMNS[t], rows)


def budget(facts: Facts, by: str, protect: Protector) -> Table:
    t = TableName.BUDGET
    rows = []
    for month in facts.months:
        spent = {e: eps for (e, m), eps in facts.spend.items() if m == month and eps > 0}
        for value, total, members in groups(facts, by):
            mine = {e: eps for e, eps in spent.items() if e in members}
            values = {
                "enterprises_spending": protect.count(
                    _label(t, "enterprises_spending", month), set(mine)
                ),
                "epsilon_spent": protect.total(
                    _label(t, "epsilon_spent", month), mine, whole=False
                ),
            }
            rows.append(Row(value, values, month=month, total=total))
    return Table(t, by, COLUMNS[t], rows)


def verdicts(facts: Facts, by: str, protect: Protector) -> Table:
    """KPI verdicts released per month: how many enterprises had one, how many there were,
    and how many came out met, not met and inconclusive (each enterprise contributes its
    own number of verdicts to a sum, so one with many cannot dominate unseen)."""
    t = TableName.VERDICTS
    rows = []
    for month in facts.months:
        counted: dict[str, dict[str, int]] = {}
        for fact in facts.verdicts:
            if fact.month == month:
                figures = counted.setdefault(fact.enterprise_id, {"verdicts": 0})
                figures["verdicts"] += 1
                figures[fact.verdict] = figures.get(fact.verdict, 0) + 1
        for value, total, members in groups(facts, by):
            held = {e: counted[e] for e in members if e in counted}
            values = {
                "enterprises_with_verdicts": protect.count(
                    _label(t, "enterprises_with_verdicts", month), set(held)
                ),
            }
            for column in ("verdicts", *VERDICT_OUTCOMES):
                values[column] = protect.total(
                    _label(t, column, month),
                    {e: own.get(column, 0) for e, own in held.items()},
                    whole=True,
                )
            rows.append(Row(value, values, month=month, total=total))
    return Table(t, by, COLUMNS[t], rows)


def equipment(facts: Facts, by: str, protect: Protector) -> Table:
    """The equipment online rate per month: how many enterprises reported devices, their
    devices configured and online on an average day of the month (each enterprise's own
    mean over the days it reported, summed), and the rate, online over configured, of the
    two *released* sums: a ratio of protected figures, never of exact ones."""
    t = TableName.EQUIPMENT
    rows = []
    for month in facts.months:
        held = {e: f for (e, m), f in facts.equipment.items() if m == month and f[0] > 0}
        for value, total, members in groups(facts, by):
            mine = {e: f for e, f in held.items() if e in members}
            configured = protect.total(
                _label(t, "devices_configured", month),
                {e: c for e, (c, _) in mine.items()},
                whole=True,
            )
            online = protect.total(
                _label(t, "devices_online", month), {e: o for e, (_, o) in mine.items()}, whole=True
            )
            values = {
                "enterprises_reporting": protect.count(
                    _label(t, "enterprises_reporting", month), set(mine)
                ),
                "devices_configured": configured,
                "devices_online": online,
                "online_rate": share(online, configured),
            }
            rows.append(Row(value, values, month=month, total=total))
    return Table(t, by, COLUMNS[t], rows)


def providers(facts: Facts, by: str, protect: Protector) -> Table:
    """Each provider's jobs per month by status: the provider's own activity, exact."""
    t = TableName.PROVIDERS
    rows = []
    by_month = _jobs_by_month(facts)
    for month in facts.months:
        counted = _job_counts(by_month.get(month, []), lambda j: j.provider_id)
        for provider_id, name in sorted(facts.providers.items(), key=lambda p: (p[1], p[0])):
            mine = counted.get(provider_id, dict.fromkeys(JOB_COLUMNS, 0))
            values = {column: Cell(float(mine[column])) for column in JOB_COLUMNS}
            rows.append(Row(provider_id, values, month=month, label=name))
    return Table(t, TOTAL, COLUMNS[t], rows)


BUILDERS: Final[Mapping[TableName, Callable[[Facts, str, Protector], Table]]] = {
    TableName.PARTICIPATION: participation,
    TableName.COVERAGE: coverage,
    TableName.JOBS: jobs,
    TableName.BUDGET: budget,
    TableName.VERDICTS: verdicts,
    TableName.PROVIDERS: providers,
    TableName.EQUIPMENT: equipment,
}


def build(name: TableName, facts: Facts, by: str, protect: Protector) -> Table:
    """Table ``name`` broken down ``by`` one category (or ``total``)."""
    return BUILDERS[name](facts, by, protect)
