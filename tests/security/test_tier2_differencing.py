"""Differencing attacks on tier-2 tables through the real API, job queue and sandbox.

An independent audit recovered one person's exact value from ordinary tier-2 tables by
adding and subtracting released cells: two tables of one dataset (X + Y - A - B), two
colluding providers pooling their tables, a mean times a count instead of a sum, a
dominance-suppressed cell next to a zero cell, and two versions of a dataset.  Tier 2 now
perturbs every released cell by the cell-key method (``analytics/cellkey.py``): the same
cell always gets the same value, and any combination of cells carries their noise.

Each test runs one attack as a provider would and asserts that the target's value is
**not** recovered (not within the data's precision), and that the error stays within the
documented bound (2 x each used cell's largest contribution for sums, 2 per cell for
counts).  Every dataset gets a fresh random secret, so an attack could, by chance,
land within 25 cents of the truth: about one run in ten thousand, and the attacker
could not tell which.  With the perturbation switched off every one of these tests
fails (checked by setting both maxima in ``analytics/cellkey.py`` to 0).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from sandbox.client import VeilClient
from tests.sandbox.conftest import PURPOSE, World

pytestmark = pytest.mark.integration

DEPTS = ["a", "b", "s", "none"]
COLUMNS: list[dict[str, Any]] = [
    {"name": "dept", "type": "string", "class": "public", "categories": DEPTS},
    {"name": "shift", "type": "string", "class": "public", "categories": ["early", "late"]},
    {"name": "value", "type": "float", "class": "internal", "lower": 0, "upper": 100000},
]
COUNT = {"kind": "count"}
SUM = {"kind": "sum", "column": "value"}
MEAN = {"kind": "mean", "column": "value"}
TARGET = 1234.56  # one person's value: the attacker's goal
# Recovered: within 25 cents.  Released sums are rounded to 0.1 (the column's bound is
# 100000), which alone moves a combination of four cells by up to 20 cents.
PRECISION = 0.25


def _rows(dept: str, n: int, start: int = 0) -> list[tuple[str, str, float]]:
    """``n`` ordinary rows of ``dept``, values 50.00 to 149.99, both shifts."""
    return [
        (dept, ("early", "late")[(start + i) % 2], 50 + ((start + i) * 37) % 10000 / 100)
        for i in range(n)
    ]


def _csv(rows: list[tuple[str, str, float]]) -> bytes:
    lines = ["dept,shift,value", *(f"{d},{s},{v:.2f}" for d, s, v in rows)]
    return ("\n".join(lines) + "\n").encode()


def _dataset(world: World, name: str, rows: list[tuple[str, str, float]]) -> str:
    """A dataset of ``rows``, granted to both providers for tier-2 tables."""
    ds = world.acme.create_dataset(name, COLUMNS)
    world.acme.upload(ds["id"], _csv(rows))
    for provider_id in (world.provider_id, world.other_provider.me()["id"]):
        world.acme.create_grant(
            provider_id,
            [ds["id"]],
            [c["name"] for c in COLUMNS],
            [2],
            [PURPOSE],
            datetime.now(UTC) + timedelta(days=1),
            0.0,
        )
    return str(ds["id"])


def _table(
    provider: VeilClient, dataset_id: str, aggregates: list[dict[str, Any]], group: str | None
) -> dict[str, dict[str, Any]]:
    """A released tier-2 table, its cells by key ("" for the whole dataset)."""
    job = provider.submit_table(dataset_id, PURPOSE, aggregates, group)
    final = provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", final
    result = provider.get_result(job["id"])
    assert result["perturbation"]["method"] == "cell-key"
    return {c["key"].get(group, "") if group else "": c for c in result["cells"]}


def _largest(rows: list[tuple[str, str, float]], **where: str) -> float:
    """The largest value among the rows meeting ``where`` (the cell's perturbation scale)."""
    frame = pl.DataFrame(rows, schema=["dept", "shift", "value"], orient="row")
    for column, value in where.items():
        frame = frame.filter(pl.col(column) == value)
    return float(frame["value"].max())  # type: ignore[arg-type]


def _sum_bound(rows: list[tuple[str, str, float]], *cells: dict[str, str]) -> float:
    """The documented bound of a combination of released sums: 2 x each one's largest
    value, plus their rounding (0.1 for a bound of 100000)."""
    return sum(2 * _largest(rows, **cell) + 0.05 for cell in cells)


def _value(cell: dict[str, Any], label: str) -> float:
    assert cell["status"] == "ok" and cell["perturbed"], cell
    return float(cell["values"][label])


# ---------------------------------------------------------------- the attacks


def test_two_tables_of_one_dataset_do_not_give_a_suppressed_person_back(world: World) -> None:
    """By department: a and b released, s (one person) suppressed; by shift: both released.
    early + late - a - b would be s's value exactly; now it carries four cells' noise."""
    rows = _rows("a", 40) + _rows("b", 30, 40) + [("s", "early", TARGET)]
    dataset_id = _dataset(world, "two-tables", rows)
    depts = _table(world.provider, dataset_id, [COUNT, SUM], "dept")
    shifts = _table(world.provider, dataset_id, [COUNT, SUM], "shift")
    assert depts["s"]["status"] == "suppressed" and depts["s"]["reasons"] == ["fewer than 10 rows"]
    assert depts["none"]["reasons"] == ["zero cell"]

    label = "sum(value)"
    estimate = sum(_value(shifts[s], label) for s in ("early", "late")) - sum(
        _value(depts[d], label) for d in ("a", "b")
    )
    assert abs(estimate - TARGET) > PRECISION  # not recovered
    bound = _sum_bound(rows, {"shift": "early"}, {"shift": "late"}, {"dept": "a"}, {"dept": "b"})
    assert abs(estimate - TARGET) <= bound
    # The person is the largest value of the early shift: that cell alone moves by up to
    # 2 x 1234.56, so the estimate's error is of the person's own size, not of cents.
    assert bound > 2 * TARGET
    count = sum(_value(shifts[s], "count") for s in ("early", "late")) - sum(
        _value(depts[d], "count") for d in ("a", "b")
    )
    assert abs(count - 1) <= 4 * 2  # four counts, each within 2


def test_colluding_providers_pool_tables_and_still_get_only_noise(world: World) -> None:
    """One provider asks by department, another by shift, and they pool what they got.
    Asking the same table as the other provider gives the very same values: nothing to
    average."""
    rows = _rows("a", 25) + _rows("b", 35, 25) + [("s", "late", TARGET)]
    dataset_id = _dataset(world, "collusion", rows)
    depts = _table(world.provider, dataset_id, [SUM], "dept")
    shifts = _table(world.other_provider, dataset_id, [SUM], "shift")
    label = "sum(value)"
    estimate = _value(shifts["early"], label) + _value(shifts["late"], label)
    estimate -= _value(depts["a"], label) + _value(depts["b"], label)
    assert abs(estimate - TARGET) > PRECISION
    bound = _sum_bound(rows, {"shift": "early"}, {"shift": "late"}, {"dept": "a"}, {"dept": "b"})
    assert abs(estimate - TARGET) <= bound

    again = [_table(p, dataset_id, [SUM], "dept") for p in (world.other_provider, world.provider)]
    assert again[0] == depts and again[1] == depts  # the same cells, the same values


def test_a_mean_times_a_count_is_a_perturbed_sum(world: World) -> None:
    """The same two-table attack with means and counts only: mean x count is the released
    (perturbed) sum, never the true one."""
    rows = _rows("a", 40) + _rows("b", 30, 40) + [("s", "early", TARGET)]
    dataset_id = _dataset(world, "mean-count", rows)
    depts = _table(world.provider, dataset_id, [COUNT, MEAN], "dept")
    shifts = _table(world.provider, dataset_id, [COUNT, MEAN], "shift")

    def total(cell: dict[str, Any]) -> float:
        return _value(cell, "mean(value)") * _value(cell, "count")

    truth = pl.DataFrame(rows, schema=["dept", "shift", "value"], orient="row")
    true_a = float(truth.filter(pl.col("dept") == "a")["value"].sum())
    assert abs(total(depts["a"]) - true_a) > PRECISION  # no exact sum of a cell either
    estimate = total(shifts["early"]) + total(shifts["late"]) - total(depts["a"])
    estimate -= total(depts["b"])
    assert abs(estimate - TARGET) > PRECISION
    bound = _sum_bound(rows, {"shift": "early"}, {"shift": "late"}, {"dept": "a"}, {"dept": "b"})
    assert abs(estimate - TARGET) <= bound + 1e-6


def test_a_dominated_cell_next_to_a_zero_cell_is_not_given_back(world: World) -> None:
    """Department s is suppressed for dominance (one huge value), department "none" is a
    zero cell (its reason says so, so the attacker takes it as 0); early + late - a - b is
    s's total, nearly the dominant value.  It comes back with noise of that value's size."""
    big = 90000.0  # a and b large enough that neither shift is dominated by it
    rows = _rows("a", 500) + _rows("b", 500, 500) + _rows("s", 11, 1000) + [("s", "late", big)]
    dataset_id = _dataset(world, "dominance", rows)
    depts = _table(world.provider, dataset_id, [SUM], "dept")
    shifts = _table(world.provider, dataset_id, [SUM], "shift")
    assert depts["s"]["reasons"] == [
        "dominance: 2 largest contributions are over 90% of the sum of 'value'"
    ]
    assert depts["none"]["reasons"] == ["zero cell"]
    truth = pl.DataFrame(rows, schema=["dept", "shift", "value"], orient="row")
    hidden = float(truth.filter(pl.col("dept") == "s")["value"].sum())
    label = "sum(value)"
    estimate = _value(shifts["early"], label) + _value(shifts["late"], label)
    estimate -= _value(depts["a"], label) + _value(depts["b"], label)
    assert abs(estimate - hidden) > PRECISION
    bound = _sum_bound(rows, {"shift": "early"}, {"shift": "late"}, {"dept": "a"}, {"dept": "b"})
    assert abs(estimate - hidden) <= bound


def test_a_new_version_does_not_give_the_added_person_back(world: World) -> None:
    """Version 2 adds one person to department a.  a(v2) - a(v1) would be their value;
    now it carries the noise of two unrelated cells.  Department b is unchanged, and so
    are its values: a new version is no fresh draw to average."""
    rows = _rows("a", 40) + _rows("b", 30, 40)
    dataset_id = _dataset(world, "versions", rows)
    before = _table(world.provider, dataset_id, [COUNT, SUM], "dept")
    grown = [*rows[::-1], ("a", "late", TARGET)]  # reordered too: rows are keyed by content
    world.acme.upload(dataset_id, _csv(grown))
    after = _table(world.provider, dataset_id, [COUNT, SUM], "dept")

    assert after["b"] == before["b"]
    label = "sum(value)"
    estimate = _value(after["a"], label) - _value(before["a"], label)
    assert abs(estimate - TARGET) > PRECISION
    assert abs(estimate - TARGET) <= 2 * TARGET + 2 * _largest(rows, dept="a") + 0.1
    added = _value(after["a"], "count") - _value(before["a"], "count")
    assert abs(added - 1) <= 2 * 2


def test_nested_cells_and_a_known_total_give_small_cells_back_only_with_noise(
    world: World,
) -> None:
    """The differencing guard's old cases (count(a) - count(a, early); a total minus its
    released parts): every cell is released now, perturbed, and the hidden few rows come
    back only within the noise of the cells used."""
    early = [("a", "early", 60.0 + i) for i in range(40)]
    rows = early + [("a", "late", 100.0 + i) for i in range(3)] + _rows("b", 60, 43)
    dataset_id = _dataset(world, "nested", rows)
    by_dept = _table(world.provider, dataset_id, [COUNT, SUM], "dept")
    crossed = world.provider.submit_table(dataset_id, PURPOSE, [COUNT, SUM], ["dept", "shift"])
    assert world.provider.wait_for_job(crossed["id"], timeout=60)["status"] == "released"
    cells = {
        (c["key"]["dept"], c["key"]["shift"]): c
        for c in world.provider.get_result(crossed["id"])["cells"]
    }
    assert cells[("a", "late")]["reasons"] == ["fewer than 10 rows"]
    assert cells[("a", "early")]["status"] == "ok"  # no history-dependent suppression
    late = _value(by_dept["a"], "sum(value)") - _value(cells[("a", "early")], "sum(value)")
    assert abs(late - 303.0) > PRECISION
    assert abs(late - 303.0) <= _sum_bound(rows, {"dept": "a"}, {"dept": "a", "shift": "early"})
    count = _value(by_dept["a"], "count") - _value(cells[("a", "early")], "count")
    assert abs(count - 3) <= 4

    total = _table(world.provider, dataset_id, [COUNT], None)[""]
    rest = _value(total, "count") - _value(by_dept["b"], "count")
    rest -= _value(cells[("a", "early")], "count")
    assert abs(rest - 3) <= 3 * 2  # three perturbed counts, each within 2
