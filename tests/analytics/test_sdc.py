"""Tier 2 tables: ACRO's rules and the cell-key perturbation of what they release."""

from __future__ import annotations

import statistics

import polars as pl
import pytest

from analytics import cellkey
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivacyUnit,
)
from analytics.sdc import (
    DEFAULT_RULES,
    PLATFORM_MIN_COUNT,
    SdcQueryError,
    SdcRules,
    TableCell,
    TableQuery,
    TableRelease,
    validate_table_query,
)
from analytics.sdc import run_table_query as run_with_secret

PUBLIC, INTERNAL = ColumnClass.PUBLIC, ColumnClass.INTERNAL
COUNT = Aggregate(AggregateKind.COUNT)
SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("region", ColumnType.STRING, PUBLIC, categories=("N", "S", "E")),
        ColumnSpec("sex", ColumnType.STRING, PUBLIC, categories=("f", "m")),
        ColumnSpec("age", ColumnType.INTEGER, INTERNAL, lower=0, upper=120),
        ColumnSpec("income", ColumnType.FLOAT, INTERNAL, lower=0, upper=1e6, nullable=True),
        ColumnSpec("dept", ColumnType.STRING, INTERNAL),
        ColumnSpec("diagnosis", ColumnType.STRING, ColumnClass.CONFIDENTIAL),
        ColumnSpec("ssn", ColumnType.STRING, ColumnClass.SECRET),
    )
)


def frame(
    region: list[str],
    sex: list[str] | None = None,
    income: list[float | None] | None = None,
    dept: list[str] | None = None,
) -> pl.DataFrame:
    n = len(region)
    return pl.DataFrame(
        {
            "region": region,
            "sex": sex or ["f"] * n,
            "age": [20 + i % 50 for i in range(n)],
            "income": income or [100.0] * n,
            "dept": dept or ["d"] * n,
            "diagnosis": ["x"] * n,
            "ssn": [f"ssn-{i}" for i in range(n)],
        },
        schema={
            "region": pl.String,
            "sex": pl.String,
            "age": pl.Int64,
            "income": pl.Float64,
            "dept": pl.String,
            "diagnosis": pl.String,
            "ssn": pl.String,
        },
    )


SECRET = bytes(range(32))


def run_table_query(
    data: pl.DataFrame,
    schema: DatasetSchema,
    query: TableQuery,
    rules: SdcRules = DEFAULT_RULES,
    secret: bytes = SECRET,
) -> TableRelease:
    return run_with_secret(data, schema, query, rules, secret=secret)


def by(*cells: TableCell) -> dict[tuple[str, ...], TableCell]:
    return {tuple(c.key.values()): c for c in cells}


def count_by(*group: str) -> TableQuery:
    return TableQuery((COUNT,), group)


# ---------------------------------------------------------------- ACRO's rules


def test_threshold_suppresses_9_rows_and_releases_10() -> None:
    release = run_table_query(frame(["N"] * 10 + ["S"] * 9), SCHEMA, count_by("region"))
    cells = by(*release.cells)
    # A count at the floor cannot move down, and so (zero mean) does not move at all.
    assert cells[("N",)].status == "ok" and cells[("N",)].values == {"count": 10.0}
    assert cells[("N",)].perturbed
    assert cells[("S",)].status == "suppressed"
    assert cells[("S",)].values == {"count": None}
    assert cells[("S",)].reasons == ("fewer than 10 rows",)
    assert not cells[("S",)].perturbed


def test_a_higher_min_count_is_applied() -> None:
    rules = SdcRules(min_count=20)
    release = run_table_query(frame(["N"] * 19), SCHEMA, count_by(), rules)
    assert release.cells[0].reasons == ("fewer than 20 rows",)
    assert release.rules is rules


def test_declared_categories_give_every_cell_and_zero_cells_are_suppressed() -> None:
    release = run_table_query(frame(["N"] * 10 + ["S"] * 10), SCHEMA, count_by("region"))
    assert [c.key for c in release.cells] == [{"region": r} for r in ("N", "S", "E")]
    east = release.cells[2]
    assert (east.status, east.reasons, east.values) == (
        "suppressed",
        ("zero cell",),
        {"count": None},
    )


def test_zeros_can_be_declared_not_disclosive() -> None:
    rules = SdcRules(zeros_disclosive=False)
    release = run_table_query(frame(["N"] * 10), SCHEMA, count_by("region"), rules)
    assert [c.values["count"] for c in release.cells] == [10.0, 0.0, 0.0]
    assert {c.status for c in release.cells} == {"ok"}
    assert [c.perturbed for c in release.cells] == [True, False, False]  # empty: nothing to


def test_cross_table_is_in_declared_order() -> None:
    data = frame(["S"] * 10 + ["N"] * 10, sex=["m"] * 10 + ["f"] * 10)
    release = run_table_query(data, SCHEMA, count_by("region", "sex"))
    keys = [tuple(c.key.values()) for c in release.cells]
    assert keys == [(r, s) for r in ("N", "S", "E") for s in ("f", "m")]
    assert [c.status for c in release.cells].count("ok") == 2


def key_of(data: pl.DataFrame, schema: DatasetSchema = SCHEMA) -> int:
    """The cell key of a cell holding exactly ``data``'s rows."""
    high, low = cellkey.key_halves(cellkey.record_keys(data, schema, SECRET))
    return cellkey.cell_key(int(high.sum()), int(low.sum()))


def test_sum_and_mean_are_perturbed_from_the_true_statistics_ignoring_nulls() -> None:
    income: list[float | None] = [float(i) for i in range(1, 13)] + [None]
    query = TableQuery(
        (COUNT, Aggregate(AggregateKind.SUM, "income"), Aggregate(AggregateKind.MEAN, "income"))
    )
    data = frame(["N"] * 13, income=income)
    (cell,) = run_table_query(data, SCHEMA, query).cells
    key = key_of(data)
    # 13 rows, 12 values adding up to 78, the largest 12; income's bound 1e6: whole numbers.
    total = cellkey.perturb_sum(78.0, 12.0, key, "income", 1e6)
    assert cell.values == {
        "count": float(cellkey.perturb_count(13, 1, key, PLATFORM_MIN_COUNT)),
        "sum(income)": total,
        "mean(income)": total / cellkey.perturb_count(12, 1, key, PLATFORM_MIN_COUNT),
    }
    assert cell.perturbed
    assert abs(cell.values["count"] - 13) <= 2 and abs(total - 78) <= 24
    mean_age = TableQuery((Aggregate(AggregateKind.MEAN, "age"),), ("region",))
    data = frame(["N"] * 12)
    first = run_table_query(data, SCHEMA, mean_age).cells[0]
    ages = [20 + i for i in range(12)]
    perturbed = cellkey.perturb_sum(float(sum(ages)), 31.0, key_of(data), "age", 120.0)
    count = cellkey.perturb_count(12, 1, key_of(data), PLATFORM_MIN_COUNT)
    assert first.values == {"mean(age)": perturbed / count}
    # The documented bound: (2 x largest + 2 x |mean|) / the perturbed count of values.
    assert abs(perturbed / count - sum(ages) / 12) <= (2 * 31 + 2 * sum(ages) / 12) / count


def test_a_summed_column_needs_min_count_values() -> None:
    income: list[float | None] = [5.0] * 9 + [None] * 11
    query = TableQuery((COUNT, Aggregate(AggregateKind.SUM, "income")))
    (cell,) = run_table_query(frame(["N"] * 20, income=income), SCHEMA, query).cells
    assert cell.reasons == ("fewer than 10 rows with a value in 'income'",)


def test_dominance_suppresses_one_huge_contributor() -> None:
    query = TableQuery((COUNT, Aggregate(AggregateKind.SUM, "income")), ("region",))
    income: list[float | None] = [1_000_000.0] + [10.0] * 19 + [10.0] * 20
    release = run_table_query(frame(["N"] * 20 + ["S"] * 20, income=income), SCHEMA, query)
    north, south = release.cells[0], release.cells[1]
    assert north.status == "suppressed"
    assert north.values == {"count": None, "sum(income)": None}
    assert north.reasons == (
        "dominance: 2 largest contributions are over 90% of the sum of 'income'",
    )
    # 20 rows of 10: within 2 of 20, and less than 2 x 10 from 200 (whole numbers: bound 1e6).
    assert south.status == "ok" and south.perturbed
    assert abs(south.values["count"] - 20) <= 2  # type: ignore[operator]
    assert abs(south.values["sum(income)"] - 200) <= 20  # type: ignore[operator]


def test_dominance_is_checked_per_individual_when_there_is_an_id() -> None:
    schema = DatasetSchema(
        columns=(
            ColumnSpec("pid", ColumnType.STRING, INTERNAL),
            ColumnSpec("amount", ColumnType.INTEGER, INTERNAL, lower=0, upper=1000),
        ),
        privacy_unit=PrivacyUnit("pid", max_rows_per_id=10),
    )
    # One person: 10 rows of 100; eleven others: one row of 1.  No row dominates,
    # but that person's 1000 of 1011 does.
    data = pl.DataFrame(
        {"pid": ["a"] * 10 + [f"p{i}" for i in range(11)], "amount": [100] * 10 + [1] * 11}
    )
    query = TableQuery((Aggregate(AggregateKind.SUM, "amount"),))
    (cell,) = run_table_query(data, schema, query).cells
    assert cell.reasons == (
        "dominance: 2 largest contributions are over 90% of the sum of 'amount'",
    )
    per_row = DatasetSchema(columns=schema.columns)
    (released,) = run_table_query(data, per_row, query).cells
    # Released per row (no row dominates), perturbed by up to 2 x the largest row, 100.
    assert released.status == "ok"
    assert abs(released.values["sum(amount)"] - 1011) <= 200  # type: ignore[operator]


def test_threshold_counts_individuals_when_there_is_an_id() -> None:
    schema = DatasetSchema(
        columns=(ColumnSpec("pid", ColumnType.INTEGER, INTERNAL, lower=0, upper=99),),
        privacy_unit=PrivacyUnit("pid", max_rows_per_id=5),
    )
    data = pl.DataFrame({"pid": [1] * 5 + [2] * 5})
    (cell,) = run_table_query(data, schema, count_by()).cells
    assert cell.reasons == ("fewer than 10 individuals",)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TableQuery((Aggregate(AggregateKind.SUM, "diagnosis"),)), "only DP tiers (3 to 5)"),
        (count_by("diagnosis"), "column 'diagnosis' is confidential"),
        (TableQuery((Aggregate(AggregateKind.MEAN, "ssn"),)), "column 'ssn' is secret"),
        (count_by("ssn"), "column 'ssn' is secret"),
        (TableQuery((Aggregate(AggregateKind.SUM, "dept"),)), "'dept': expected a numeric"),
        (count_by("income"), "'income': expected a string, integer or boolean key"),
        (TableQuery((Aggregate(AggregateKind.COUNT, "age"),)), "count: expected no column"),
        (TableQuery((Aggregate(AggregateKind.SUM),)), "sum: expected a column"),
        (TableQuery((Aggregate(AggregateKind.MEDIAN, "age"),)), "expected count, sum or mean"),
        (TableQuery(()), "expected 1 to 8"),
        (TableQuery((COUNT,) * 9), "expected 1 to 8"),
        (TableQuery((COUNT, COUNT)), "each aggregate once"),
        (count_by("region", "sex", "age", "dept", "region"), "at most 4 columns"),
        (count_by("region", "region"), "each column once"),
        (count_by("nope"), "column 'nope': expected a declared column"),
    ],
)
def test_queries_outside_tier_2_are_refused(query: TableQuery, expected: str) -> None:
    with pytest.raises(SdcQueryError) as caught:
        validate_table_query(SCHEMA, query)
    assert expected in str(caught.value)
    with pytest.raises(SdcQueryError):
        run_table_query(frame(["N"] * 10), SCHEMA, query)


def test_the_id_column_is_not_a_group_key() -> None:
    schema = DatasetSchema(
        columns=(ColumnSpec("pid", ColumnType.INTEGER, INTERNAL, lower=0, upper=99),),
        privacy_unit=PrivacyUnit("pid"),
    )
    with pytest.raises(SdcQueryError, match="privacy-unit id"):
        validate_table_query(schema, count_by("pid"))


@pytest.mark.parametrize(
    "changes",
    [{"min_count": PLATFORM_MIN_COUNT - 1}, {"min_count": 0}, {"nk_n": 0}, {"nk_k": 1.0}],
)
def test_rules_below_the_platform_floor_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SdcRules(**changes)  # type: ignore[arg-type]


def test_messages_and_output_never_show_data_values() -> None:
    secret = "Zebediah-Quux"
    data = frame(["N"] * 12, dept=[secret] * 3 + ["common"] * 9)
    data = data.with_columns(pl.Series("ssn", [secret] * 12), pl.Series("diagnosis", [secret] * 12))
    # A suppressed cell keyed by an internal column would show a rare value: left out.
    release = run_table_query(data, SCHEMA, count_by("dept"))
    assert secret not in repr(release.cells)
    assert [c.key for c in release.cells] == []  # 'common' has 9 rows: suppressed too
    for query in (count_by("ssn"), TableQuery((Aggregate(AggregateKind.SUM, "diagnosis"),))):
        with pytest.raises(SdcQueryError) as caught:
            run_table_query(data, SCHEMA, query)
        assert secret not in str(caught.value)
    undeclared = data.with_columns(pl.Series("region", [secret] * 12))
    with pytest.raises(ValueError) as outside:
        run_table_query(undeclared, SCHEMA, count_by("region"))
    assert secret not in str(outside.value)


def test_observed_keys_are_sorted_by_value() -> None:
    data = frame(["N"] * 30).with_columns(pl.Series("age", [10] * 10 + [9] * 10 + [100] * 10))
    release = run_table_query(data, SCHEMA, count_by("age"))
    assert [c.key["age"] for c in release.cells] == ["9", "10", "100"]


# ---------------------------------------------------------------- the cell-key perturbation

SUM_INCOME = TableQuery((COUNT, Aggregate(AggregateKind.SUM, "income")), ("region",))


def incomes(n: int, start: float = 1000.0) -> list[float | None]:
    return [start + 37.0 * i for i in range(n)]


def test_the_same_units_get_the_same_values_in_every_table_and_for_every_grant() -> None:
    data = frame(["N"] * 25 + ["S"] * 30, income=incomes(55))  # everyone's sex is "f"
    by_region = by(*run_table_query(data, SCHEMA, SUM_INCOME).cells)
    query = TableQuery(SUM_INCOME.aggregates, ("region", "sex"))
    crossed = by(*run_table_query(data, SCHEMA, query).cells)
    assert crossed[("N", "f")].values == by_region[("N",)].values  # the same 25 rows
    assert crossed[("S", "f")].values == by_region[("S",)].values
    assert crossed[("N", "m")].status == "suppressed"
    # A grant with a higher minimum (another provider) sees the same value for a cell.
    stricter = by(*run_table_query(data, SCHEMA, SUM_INCOME, SdcRules(min_count=20)).cells)
    assert stricter[("N",)].values == by_region[("N",)].values
    assert stricter[("S",)].values == by_region[("S",)].values
    again = run_table_query(data.reverse(), SCHEMA, SUM_INCOME).cells  # row order is no key
    assert by(*again) == by_region


def test_a_new_version_keeps_unchanged_cells_and_moves_changed_ones() -> None:
    first = frame(["N"] * 25 + ["S"] * 12, income=incomes(37))
    extra = frame(["S"] * 3, income=[5000.0, 5100.0, 5200.0])
    second = pl.concat([extra, first.reverse()])  # 3 more rows in S, the rest reordered
    before = by(*run_table_query(first, SCHEMA, SUM_INCOME).cells)
    after = by(*run_table_query(second, SCHEMA, SUM_INCOME).cells)
    assert after[("N",)] == before[("N",)]
    added = after[("S",)].values["sum(income)"] - before[("S",)].values["sum(income)"]  # type: ignore[operator]
    assert added != 15300.0  # the new rows' total is not given back...
    assert abs(added - 15300.0) <= 2 * 5200 + 2 * 1000 + 37 * 36  # ...but it is near it


def test_differencing_nested_cells_gives_the_few_rows_back_only_with_noise() -> None:
    sex = ["f"] * 20 + ["m"] * 5
    data = frame(["N"] * 25, sex=sex, income=incomes(25))
    query = TableQuery(SUM_INCOME.aggregates)
    (total,) = run_table_query(data, SCHEMA, query).cells
    split = by(*run_table_query(data, SCHEMA, TableQuery(SUM_INCOME.aggregates, ("sex",))).cells)
    assert split[("m",)].status == "suppressed"  # 5 rows
    hidden = sum(incomes(25)[20:])  # type: ignore[arg-type]
    derived = total.values["sum(income)"] - split[("f",)].values["sum(income)"]  # type: ignore[operator]
    assert derived != hidden
    assert abs(derived - hidden) <= 2 * max(incomes(25)) + 2 * max(incomes(20))  # type: ignore[type-var]
    rows = total.values["count"] - split[("f",)].values["count"]  # type: ignore[operator]
    assert abs(rows - 5) <= 4


def test_a_mean_times_a_count_gives_a_perturbed_sum() -> None:
    data = frame(["N"] * 30, income=incomes(30))
    query = TableQuery(
        (COUNT, Aggregate(AggregateKind.SUM, "income"), Aggregate(AggregateKind.MEAN, "income"))
    )
    (cell,) = run_table_query(data, SCHEMA, query).cells
    mean, count = cell.values["mean(income)"], cell.values["count"]
    assert mean is not None and count is not None
    # No nulls: the mean's denominator is the released count, so mean x count is the
    # released (perturbed) sum, not the true one.
    assert mean * count == pytest.approx(cell.values["sum(income)"], rel=1e-12)
    assert round(mean * count) != sum(incomes(30))  # type: ignore[arg-type]


def test_the_secret_keys_the_perturbation() -> None:
    data = frame(["N"] * 30, income=incomes(30))
    ours = run_table_query(data, SCHEMA, SUM_INCOME).cells[0].values
    theirs = run_table_query(data, SCHEMA, SUM_INCOME, secret=bytes(32)).cells[0].values
    assert ours["sum(income)"] != theirs["sum(income)"]
    with pytest.raises(ValueError, match="32 bytes"):
        run_table_query(data, SCHEMA, SUM_INCOME, secret=b"")


def test_released_values_stay_within_the_documented_bounds() -> None:
    sizes = [10 + (i * 7) % 31 for i in range(300)]  # 300 cells of 10 to 40 rows
    dept = [f"d{i:03d}" for i, n in enumerate(sizes) for _ in range(n)]
    income: list[float | None] = [float((i * 7919) % 5000) for i in range(len(dept))]
    data = frame(["N"] * len(dept), dept=dept, income=income)
    query = TableQuery(
        (COUNT, Aggregate(AggregateKind.SUM, "income"), Aggregate(AggregateKind.MEAN, "income")),
        ("dept",),
    )
    truth = data.group_by("dept").agg(
        pl.len().alias("n"), pl.col("income").sum().alias("s"), pl.col("income").max().alias("x")
    )
    true = {r["dept"]: r for r in truth.to_dicts()}
    count_moves = []
    for cell in run_table_query(data, SCHEMA, query).cells:
        t, v = true[cell.key["dept"]], cell.values
        if cell.status != "ok":
            continue  # dominated (a cell of zeros and one value), or too few rows
        assert v["count"] is not None and v["sum(income)"] is not None and v["mean(income)"]
        assert v["count"] >= PLATFORM_MIN_COUNT and abs(v["count"] - t["n"]) <= 2
        assert abs(v["sum(income)"] - t["s"]) <= 2 * t["x"] + 0.5  # rounded to whole numbers
        mean = t["s"] / t["n"]
        assert abs(v["mean(income)"] - mean) <= (2 * t["x"] + 2 * mean + 0.5) / v["count"]
        count_moves.append(v["count"] - t["n"])
    assert len(count_moves) > 250
    assert abs(statistics.fmean(count_moves)) < 0.3  # zero mean (about 6 sigma)
    assert set(count_moves) == {-2, -1, 0, 1, 2}
