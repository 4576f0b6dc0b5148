"""Tier 2 tables: ACRO's rules, exact values, and the differencing guards."""

from __future__ import annotations

import polars as pl
import pytest

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
    PLATFORM_MIN_COUNT,
    PriorCell,
    SdcQueryError,
    SdcRules,
    TableCell,
    TableQuery,
    run_table_query,
    validate_table_query,
)

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


def by(*cells: TableCell) -> dict[tuple[str, ...], TableCell]:
    return {tuple(c.key.values()): c for c in cells}


def count_by(*group: str) -> TableQuery:
    return TableQuery((COUNT,), group)


# ---------------------------------------------------------------- ACRO's rules


def test_threshold_suppresses_9_rows_and_releases_10() -> None:
    release = run_table_query(frame(["N"] * 10 + ["S"] * 9), SCHEMA, count_by("region"))
    cells = by(*release.cells)
    assert cells[("N",)].status == "ok" and cells[("N",)].values == {"count": 10.0}
    assert cells[("S",)].status == "suppressed"
    assert cells[("S",)].values == {"count": None}
    assert cells[("S",)].reasons == ("fewer than 10 rows",)
    assert [c.conditions for c in release.released] == [{"region": "N"}]
    assert release.released[0].count == 10


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


def test_cross_table_is_in_declared_order() -> None:
    data = frame(["S"] * 10 + ["N"] * 10, sex=["m"] * 10 + ["f"] * 10)
    release = run_table_query(data, SCHEMA, count_by("region", "sex"))
    keys = [tuple(c.key.values()) for c in release.cells]
    assert keys == [(r, s) for r in ("N", "S", "E") for s in ("f", "m")]
    assert [c.status for c in release.cells].count("ok") == 2


def test_sum_and_mean_are_exact_and_ignore_nulls() -> None:
    income: list[float | None] = [float(i) for i in range(1, 13)] + [None]
    query = TableQuery(
        (COUNT, Aggregate(AggregateKind.SUM, "income"), Aggregate(AggregateKind.MEAN, "income"))
    )
    (cell,) = run_table_query(frame(["N"] * 13, income=income), SCHEMA, query).cells
    assert cell.values == {"count": 13.0, "sum(income)": 78.0, "mean(income)": 78.0 / 12}
    mean_age = TableQuery((Aggregate(AggregateKind.MEAN, "age"),), ("region",))
    first = run_table_query(frame(["N"] * 12), SCHEMA, mean_age).cells[0]
    assert first.values == {"mean(age)": sum(20 + i for i in range(12)) / 12}


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
    assert south.values == {"count": 20.0, "sum(income)": 200.0}


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
    assert run_table_query(data, per_row, query).cells[0].values == {"sum(amount)": 1011.0}


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
        (TableQuery((Aggregate(AggregateKind.SUM, "diagnosis"),)), "only DP tiers (3–5)"),  # noqa: RUF001
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


# ---------------------------------------------------------------- differencing


def test_same_version_nested_cells_a_few_rows_apart_are_suppressed() -> None:
    total = [PriorCell({}, same_version=True, count=25)]
    data = frame(["N"] * 25, sex=["f"] * 20 + ["m"] * 5)
    cells = by(*run_table_query(data, SCHEMA, count_by("sex"), prior=total).cells)
    assert cells[("f",)].reasons == (
        "differencing: differs from an earlier released cell by fewer than 10 rows",
    )
    assert cells[("m",)].reasons == ("fewer than 10 rows",)
    # 12 and 13 rows apart from the total: both safe.
    data = frame(["N"] * 25, sex=["f"] * 13 + ["m"] * 12)
    release = run_table_query(data, SCHEMA, count_by("sex"), prior=total)
    assert [c.values["count"] for c in release.cells] == [13.0, 12.0]


def test_same_version_counts_are_recounted_on_the_frame() -> None:
    # The stored count is ignored for the same version: the frame is the truth.
    stale = [PriorCell({}, same_version=True, count=1000)]
    data = frame(["N"] * 25, sex=["f"] * 20 + ["m"] * 5)
    cells = by(*run_table_query(data, SCHEMA, count_by("sex"), prior=stale).cells)
    assert cells[("f",)].status == "suppressed"


def test_a_total_close_to_an_earlier_cell_is_suppressed() -> None:
    female = [PriorCell({"sex": "f"}, same_version=True, count=20)]
    data = frame(["N"] * 25, sex=["f"] * 20 + ["m"] * 5)
    (cell,) = run_table_query(data, SCHEMA, count_by(), prior=female).cells
    assert cell.reasons == (
        "differencing: differs from an earlier released cell by fewer than 10 rows",
    )
    both = [*female, PriorCell({"sex": "m"}, same_version=True, count=12)]
    data = frame(["N"] * 32, sex=["f"] * 20 + ["m"] * 12)
    assert run_table_query(data, SCHEMA, count_by(), prior=both).cells[0].status == "ok"


@pytest.mark.parametrize(("earlier", "status"), [(17, "suppressed"), (20, "ok"), (30, "ok")])
def test_another_version_changing_a_cell_by_a_few_rows(earlier: int, status: str) -> None:
    prior = [PriorCell({"sex": "f"}, same_version=False, count=earlier)]
    data = frame(["N"] * 33, sex=["f"] * 20 + ["m"] * 13)
    cells = by(*run_table_query(data, SCHEMA, count_by("sex"), prior=prior).cells)
    assert cells[("f",)].status == status
    assert cells[("m",)].status == "ok"


def test_a_total_after_its_split_is_checked_for_what_it_reveals() -> None:
    reveals = ("differencing: earlier released cells within it would reveal others",)
    split = [PriorCell({"region": r}, True, n) for r, n in (("N", 25), ("S", 12))]
    # Three rows in E: the total minus N and S would reveal them.
    data = frame(["N"] * 25 + ["S"] * 12 + ["E"] * 3)
    assert run_table_query(data, SCHEMA, count_by(), prior=split).cells[0].reasons == reveals
    # Twelve rows in E, not released (so suppressed, say for dominance): the total would
    # give its count exactly.
    data = frame(["N"] * 25 + ["S"] * 12 + ["E"] * 12)
    assert run_table_query(data, SCHEMA, count_by(), prior=split).cells[0].reasons == reveals
    released = [*split, PriorCell({"region": "E"}, True, 12)]
    assert run_table_query(data, SCHEMA, count_by(), prior=released).cells[0].status == "ok"
    # Two unreleased cells with 24 rows together: safe.
    north = split[:1]
    assert run_table_query(data, SCHEMA, count_by(), prior=north).cells[0].status == "ok"
    # No rows in E: the total would reveal the suppressed zero cell.
    data = frame(["N"] * 25 + ["S"] * 12)
    assert run_table_query(data, SCHEMA, count_by(), prior=split).cells[0].reasons == reveals
    rules = SdcRules(zeros_disclosive=False)
    assert run_table_query(data, SCHEMA, count_by(), rules, split).cells[0].status == "ok"


def test_releasing_the_same_table_again_is_unchanged() -> None:
    data = frame(["N"] * 25 + ["S"] * 12 + ["E"] * 3)
    first = run_table_query(data, SCHEMA, count_by("region"))
    again = run_table_query(data, SCHEMA, count_by("region"), prior=first.released)
    assert again.cells == first.cells


# ---------------------------------------------------------------- secondary suppression


def test_one_suppressed_cell_under_a_known_total_brings_a_second() -> None:
    data = frame(["N"] * 25 + ["S"] * 12 + ["E"] * 4)
    alone = run_table_query(data, SCHEMA, count_by("region"))
    assert [c.status for c in alone.cells] == ["ok", "ok", "suppressed"]
    total = [PriorCell({}, same_version=True, count=41)]
    release = run_table_query(data, SCHEMA, count_by("region"), prior=total)
    reasons = [c.reasons for c in release.cells]
    assert reasons == [(), ("secondary suppression",), ("fewer than 10 rows",)]
    assert [c.conditions for c in release.released] == [{"region": "N"}]


def test_secondary_suppression_follows_crossing_lines() -> None:
    counts = {
        ("N", "f"): 30,
        ("N", "m"): 12,
        ("S", "f"): 20,
        ("S", "m"): 15,
        ("E", "f"): 12,
        ("E", "m"): 11,
    }
    region = [r for (r, _), n in counts.items() for _ in range(n)]
    sex = [s for (_, s), n in counts.items() for _ in range(n)]
    # One huge income in (N, m): suppressed for dominance, not for its size.
    income: list[float | None] = [10.0] * 30 + [1e6] + [10.0] * (len(region) - 31)
    known = [PriorCell({"region": "N"}, True, 42), PriorCell({"sex": "f"}, True, 62)]
    query = TableQuery((COUNT, Aggregate(AggregateKind.SUM, "income")), ("region", "sex"))
    data = frame(region, sex=sex, income=income)
    reasons = {
        tuple(c.key.values()): c.reasons
        for c in run_table_query(data, SCHEMA, query, prior=known).cells
    }
    assert reasons == {
        ("N", "f"): ("secondary suppression",),  # row N: (N, m) alone was suppressed
        ("N", "m"): ("dominance: 2 largest contributions are over 90% of the sum of 'income'",),
        ("S", "f"): (),
        ("S", "m"): (),
        ("E", "f"): ("secondary suppression",),  # column f: then (N, f) alone was
        ("E", "m"): (),
    }
    alone = run_table_query(data, SCHEMA, query).cells
    assert [c.status for c in alone].count("suppressed") == 1
