"""The bureau's tables cannot isolate an enterprise (sandbox.programme; docs/programme.md).

Pure tests on built facts, no database: the threshold (five enterprises), the dominance
rule, the cell-key perturbation and its consistency, and an attacker who reads every
table, in every breakdown and month, to learn one enterprise that is alone in each of its
categories: by its own rows, by subtracting the other categories from the total, and by
a month in which it alone was active.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from sandbox.accounts.categories import Category
from sandbox.programme import protection
from sandbox.programme.protection import MIN_ENTERPRISES, Cell, Protector
from sandbox.programme.tables import (
    BREAKDOWNS,
    TOTAL,
    Facts,
    JobFact,
    Row,
    Table,
    TableName,
    VerdictFact,
    build,
)

MONTHS = ["2026-10", "2026-11", "2026-12"]
LONE = "ent_lone"
#: The month in which the lone enterprise alone was active.
LONE_MONTH = "2026-12"
PROTECTED = [t for t in TableName if t is not TableName.PROVIDERS]
MONTHLY = (TableName.JOBS, TableName.BUDGET, TableName.VERDICTS, TableName.EQUIPMENT)
#: Figures derived from released ones (a mean, a share), not released by the protector.
DERIVED = ("per_", "_rate")
OUTCOMES = ("met", "not_met", "inconclusive")


def enterprise(i: int) -> str:
    return f"ent_{i:03d}"


def facts(lone_activity: int = 3) -> Facts:
    """Thirty enterprises in two industries, two districts and two size bands (15 each,
    the district cutting across the industry), plus :data:`LONE`, alone in its industry,
    district and size band.  ``lone_activity``: how many datasets, jobs and KPI verdicts
    (each month) and tenths of ε it has (0: none, and no grant, no node)."""
    others = {
        enterprise(i): {
            Category.INDUSTRY: "machinery" if i % 2 else "textiles",
            Category.DISTRICT: "north" if i % 3 else "south",
            Category.SIZE_BAND: "small" if i < 15 else "medium",
        }
        for i in range(30)
    }
    lone = {Category.INDUSTRY: "optics", Category.DISTRICT: "island", Category.SIZE_BAND: "large"}
    built = Facts({**others, LONE: lone}, months=MONTHS)
    for i, e in enumerate(others):
        built.datasets[e] = (1 + i % 3, 8 + i % 5)
        if i % 4:
            built.active_grants.add(e)
        if i % 2:
            built.active_nodes.add(e)
        for month in MONTHS[:2]:
            for j in range(1 + i % 4):
                built.jobs.append(JobFact(e, f"prv_{i % 3}", ("released", "failed")[j % 2], month))
            built.spend[(e, month)] = 0.1 * (1 + i % 4)
            for j in range(i % 3):
                built.verdicts.append(VerdictFact(e, OUTCOMES[(i + j) % 3], month))
            # Devices configured and online on an average day of the month.
            built.equipment[(e, month)] = (10.5 + i % 7, 6.25 + i % 5)
    if lone_activity:
        built.datasets[LONE] = (lone_activity, 10 * lone_activity)
        built.active_grants.add(LONE)
        built.active_nodes.add(LONE)
        for month in MONTHS:
            for _ in range(lone_activity):
                built.jobs.append(JobFact(LONE, "prv_0", "released", month))
            built.spend[(LONE, month)] = 0.1 * lone_activity
            for j in range(lone_activity):
                built.verdicts.append(VerdictFact(LONE, OUTCOMES[j % 3], month))
            built.equipment[(LONE, month)] = (4.0 * lone_activity, 3.0 * lone_activity)
    built.providers = {"prv_0": "Predicta", "prv_1": "Quality Lab", "prv_2": "Gearbox AI"}
    return built


def every_table(world: Facts, protect: Protector) -> Iterator[Table]:
    for name in PROTECTED:
        for by in BREAKDOWNS:
            yield build(name, world, by, protect)


def lone_rows(table: Table) -> list[Row]:
    lone_values = {"optics", "island", "large"}
    return [r for r in table.rows if not r.total and r.group in lone_values]


# -- the threshold and the dominance rule ----------------------------------------------------


def test_a_cell_of_fewer_than_five_enterprises_is_suppressed_not_zero() -> None:
    protect = Protector(b"s" * 32)
    four = {enterprise(i) for i in range(MIN_ENTERPRISES - 1)}
    five = four | {enterprise(99)}
    assert protect.count("f", four) == Cell(None, suppressed=True)
    assert protect.count("f", five).value is not None
    spread = {e: 1.0 for e in four}
    assert protect.total("f", spread, whole=True).suppressed
    assert not protect.total("f", spread | {enterprise(99): 1.0}, whole=True).suppressed
    # Zero contributions are not contributors: four active and six idle is still four.
    idle = {enterprise(50 + i): 0.0 for i in range(6)}
    assert protect.total("f", spread | idle, whole=True).suppressed


def test_a_sum_dominated_by_two_enterprises_is_suppressed() -> None:
    protect = Protector(b"s" * 32)
    small = {enterprise(i): 1.0 for i in range(5)}
    assert not protect.total("f", small, whole=True).suppressed
    dominated = small | {enterprise(90): 40.0, enterprise(91): 40.0}
    assert protect.total("f", dominated, whole=True).suppressed


def test_the_lone_enterprise_is_suppressed_in_every_table_and_breakdown() -> None:
    """Its industry, district and size band each hold it alone: every figure of those rows
    is suppressed, and shown as such (None and listed), never as 0."""
    protect = Protector(secrets.token_bytes(32))
    for table in every_table(facts(), protect):
        rows = lone_rows(table)
        monthly = table.name in MONTHLY
        expected = 0 if table.by == TOTAL else len(MONTHS) if monthly else 1
        assert len(rows) == expected, (table.name, table.by)
        for row in rows:
            assert all(cell.suppressed and cell.value is None for cell in row.values.values())


def test_a_month_in_which_one_enterprise_alone_was_active_shows_nothing() -> None:
    protect = Protector(secrets.token_bytes(32))
    for name in MONTHLY:
        for by in BREAKDOWNS:
            table = build(name, facts(), by, protect)
            alone = [r for r in table.rows if r.month == LONE_MONTH]
            assert alone and all(c.suppressed for r in alone for c in r.values.values())


# -- the perturbation -------------------------------------------------------------------------


def test_counts_move_by_at_most_two_and_never_below_five() -> None:
    moved = 0
    members = {enterprise(i) for i in range(12)}
    for i in range(200):
        cell = Protector(secrets.token_bytes(32)).count(f"label-{i}", members)
        assert cell.value is not None and abs(cell.value - 12) <= 2
        moved += cell.value != 12
    assert moved > 100  # four of five draws move it (p = -2..2, uniform)
    for i in range(100):
        small = Protector(secrets.token_bytes(32)).count(f"l{i}", set(list(members)[:5]))
        assert small.value is not None and small.value >= MIN_ENTERPRISES


def test_sums_move_by_less_than_twice_the_largest_contribution() -> None:
    given = {enterprise(i): float(1 + i % 4) for i in range(10)}
    true = sum(given.values())
    moved = 0
    for i in range(200):
        cell = Protector(secrets.token_bytes(32)).total(f"l{i}", given, whole=False)
        assert cell.value is not None and abs(cell.value - true) < 2 * 4 + 0.001
        moved += abs(cell.value - true) > 0.01
    assert moved > 190


def test_the_same_cell_always_gets_the_same_value() -> None:
    """Asked again, or through another breakdown whose row holds the same enterprises."""
    secret = secrets.token_bytes(32)
    world = facts()
    # A district made to hold exactly the machinery enterprises.
    for categories in world.enterprises.values():
        if categories[Category.INDUSTRY] == "machinery":
            categories[Category.DISTRICT] = "metal-park"
    first = build(TableName.PARTICIPATION, world, "industry", Protector(secret))
    again = build(TableName.PARTICIPATION, world, "industry", Protector(secret))
    by_district = build(TableName.PARTICIPATION, world, "district", Protector(secret))
    machinery = next(r for r in first.rows if r.group == "machinery")
    assert machinery == next(r for r in again.rows if r.group == "machinery")
    park = next(r for r in by_district.rows if r.group == "metal-park")
    assert park.values == machinery.values


# -- the differencing attacker ------------------------------------------------------------------


def differencing(table: Table) -> Iterator[tuple[str, str | None, float]]:
    """(figure, month, estimate) of the lone enterprise's contribution: the total row minus
    every other row of the same month, where all of those were released."""
    months = sorted({r.month for r in table.rows}, key=str)
    for month in months:
        rows = [r for r in table.rows if r.month == month]
        total = next(r for r in rows if r.total)
        others = [r for r in rows if not r.total and r not in lone_rows(table)]
        for figure in table.columns:
            cells = [total.values[figure], *(r.values[figure] for r in others)]
            if any(c.value is None for c in cells) or any(d in figure for d in DERIVED):
                continue
            whole = cells[0].value
            assert whole is not None
            yield figure, month, whole - sum(c.value or 0.0 for c in cells[1:])


def truth(name: TableName, figure: str, month: str | None, world: Facts) -> float:
    """The lone enterprise's true contribution to ``figure``."""
    jobs = [j for j in world.jobs if j.enterprise_id == LONE and j.month == month]
    verdicts = [v.verdict for v in world.verdicts if v.enterprise_id == LONE and v.month == month]
    own = {
        "enterprises": 1.0,
        "with_datasets": float(LONE in world.datasets),
        "with_active_grants": float(LONE in world.active_grants),
        "with_active_node": float(LONE in world.active_nodes),
        "enterprises_with_datasets": float(LONE in world.datasets),
        "datasets": float(world.datasets.get(LONE, (0, 0))[0]),
        "declared_columns": float(world.datasets.get(LONE, (0, 0))[1]),
        "submitted": float(len(jobs)),
        "released": float(sum(j.status == "released" for j in jobs)),
        "failed": float(sum(j.status == "failed" for j in jobs)),
        "denied": 0.0,
        "pending": 0.0,
        "enterprises_spending": float(world.spend.get((LONE, month or ""), 0) > 0),
        "epsilon_spent": world.spend.get((LONE, month or ""), 0.0),
        "enterprises_with_verdicts": float(bool(verdicts)),
        "verdicts": float(len(verdicts)),
        **{outcome: float(verdicts.count(outcome)) for outcome in OUTCOMES},
        "enterprises_reporting": float((LONE, month) in world.equipment),
        "devices_configured": world.equipment.get((LONE, month or ""), (0.0, 0.0))[0],
        "devices_online": world.equipment.get((LONE, month or ""), (0.0, 0.0))[1],
    }
    return own[figure]


def test_subtracting_the_other_categories_from_the_total_does_not_isolate_it() -> None:
    """Every table, every breakdown, every month: the total minus the other rows misses the
    lone enterprise's true contribution in most draws of the secret (each draw a new
    programme; within one, the same cells always give the same answer, so asking again
    brings nothing new)."""
    world = facts()
    hits: dict[tuple[TableName, str, str, str | None], int] = {}
    tries: dict[tuple[TableName, str, str, str | None], int] = {}
    for _ in range(60):
        protect = Protector(secrets.token_bytes(32))
        for table in every_table(world, protect):
            for figure, month, estimate in differencing(table):
                key = (table.name, table.by, figure, month)
                tries[key] = tries.get(key, 0) + 1
                exact = abs(estimate - truth(table.name, figure, month, world)) < 1e-6
                hits[key] = hits.get(key, 0) + exact
    assert tries, "the attacker found no table to subtract"
    assert {name for name, *_ in tries} == set(PROTECTED)
    exposed = {key: hits[key] / n for key, n in tries.items() if hits[key] / n > 0.5}
    assert not exposed, f"figures the differencing recovers exactly: {exposed}"


def test_two_programmes_that_differ_only_in_the_lone_enterprise_look_alike() -> None:
    """The attacker compares the published tables with and without the lone enterprise's
    activity: the rows that do not hold it are identical (the same cells, the same
    perturbation), and the ones that do are suppressed or perturbed anew."""
    secret = secrets.token_bytes(32)
    active, idle = facts(lone_activity=3), facts(lone_activity=0)
    for name in PROTECTED:
        for by in BREAKDOWNS:
            a = build(name, active, by, Protector(secret))
            b = build(name, idle, by, Protector(secret))
            for row_a, row_b in zip(a.rows, b.rows, strict=True):
                if not row_a.total and row_a.group not in {"optics", "island", "large"}:
                    assert row_a.values == row_b.values


@pytest.mark.parametrize("name", PROTECTED)
def test_every_row_of_a_protected_table_aggregates_enterprises_or_is_suppressed(
    name: TableName,
) -> None:
    """The rule holds for the whole class: a protected table has no row that is not the
    protector's (a builder that skipped it would show the lone enterprise's true value)."""
    calls: list[str] = []

    class Spy(Protector):
        def count(self, label: str, members: set[str]) -> Cell:
            calls.append(label)
            return super().count(label, members)

        def total(self, label: str, contributions: dict[str, float], *, whole: bool) -> Cell:  # type: ignore[override]
            calls.append(label)
            return super().total(label, contributions, whole=whole)

    table = build(name, facts(), "industry", Spy(b"k" * 32))
    direct = sum(1 for r in table.rows for f in table.columns if not any(d in f for d in DERIVED))
    assert len(calls) == direct
    assert protection.MIN_ENTERPRISES == 5


@pytest.mark.parametrize("by", BREAKDOWNS)
def test_no_breakdown_releases_one_enterprises_verdict_outcome(by: str) -> None:
    """Six enterprises with verdicts in a month, only one of them met: the month's verdict
    count is released, but "met" (one enterprise's) is suppressed in every breakdown, and
    so is every figure of a row that holds fewer than five of them."""
    world = facts(lone_activity=0)
    world.verdicts = [
        VerdictFact(enterprise(i), "met" if i == 1 else "not_met", MONTHS[0])
        for i in range(1, 13, 2)
    ]  # six machinery enterprises, odd i: three in each size band, 4 north and 2 south
    table = build(TableName.VERDICTS, world, by, Protector(secrets.token_bytes(32)))
    rows = [r for r in table.rows if r.month == MONTHS[0]]
    for row in rows:
        assert row.values["met"].suppressed, (by, row.group)
        assert row.values["inconclusive"].suppressed  # nobody: a suppressed 0, not a 0
        released = row.values["verdicts"]
        assert released.suppressed or (released.value is not None and released.value >= 4)
    total = next(r for r in rows if r.total)
    assert not total.values["verdicts"].suppressed and not total.values["not_met"].suppressed
    assert all(c.suppressed for r in table.rows if r.month != MONTHS[0] for c in r.values.values())
