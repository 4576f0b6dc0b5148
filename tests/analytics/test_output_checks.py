"""Tier 5 output checks: type, size, row-level values, small table cells, DP-only outputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import polars as pl
import pytest

from analytics.output_checks import MAX_DEPTH, MAX_STRING, OutputCheck, check_output
from analytics.schema import (
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivacyUnit,
)

PUBLIC, INTERNAL = ColumnClass.PUBLIC, ColumnClass.INTERNAL
CONFIDENTIAL, SECRET = ColumnClass.CONFIDENTIAL, ColumnClass.SECRET
MACHINES = ("press-1", "press-2", "press-3")
SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("machine", ColumnType.STRING, PUBLIC, categories=MACHINES),
        ColumnSpec("shift", ColumnType.STRING, PUBLIC, categories=("day", "night")),
        ColumnSpec("line", ColumnType.INTEGER, INTERNAL, lower=1, upper=5),
        ColumnSpec("temperature", ColumnType.FLOAT, INTERNAL, lower=0, upper=200),
        ColumnSpec("yield_pct", ColumnType.FLOAT, CONFIDENTIAL, lower=0, upper=100),
        ColumnSpec("supplier", ColumnType.STRING, CONFIDENTIAL),
        ColumnSpec("recipe", ColumnType.FLOAT, SECRET, lower=0, upper=10),
    )
)
GIVEN = ("machine", "shift", "line", "temperature")
ROWS = 100


def private_frame() -> pl.DataFrame:
    """100 rows: press-1 x60, press-2 x35, press-3 x5 (a small cell)."""
    machines = ["press-1"] * 60 + ["press-2"] * 35 + ["press-3"] * 5
    rng = np.random.default_rng(11)
    return pl.DataFrame(
        {
            "machine": machines,
            "shift": ["day" if i % 2 else "night" for i in range(ROWS)],
            "line": [1 + i % 5 for i in range(ROWS)],
            "temperature": rng.uniform(60, 100, ROWS),
            "yield_pct": rng.uniform(50, 100, ROWS),
            "supplier": [f"supplier-{i % 7}" for i in range(ROWS)],
            "recipe": rng.uniform(1, 2, ROWS),
        }
    )


PRIVATE = private_frame()


def check(value: object, **options: Any) -> OutputCheck:
    options.setdefault("min_count", 10)
    given = options.pop("given", GIVEN)
    return check_output(value, options.pop("private", PRIVATE), SCHEMA, given, **options)


def as_pandas() -> pd.DataFrame:
    return PRIVATE.to_pandas()


# ---------------------------------------------------------------- pass and normal form


PUBLIC_GIVEN = ("machine", "shift")


def test_a_scalar_statistic_of_the_whole_dataset_passes_with_veils_own_value() -> None:
    mean = np.float64(as_pandas()["temperature"].mean())
    result = check(mean)
    assert result.status == "pass" and result.reasons == ()
    assert type(result.value) is float
    assert result.value == PRIVATE["temperature"].mean()  # recomputed by Veil (polars)


def test_a_number_veil_cannot_recompute_is_held() -> None:
    result = check(np.float64(12.5))
    assert result.status == "held"
    assert result.reasons[0].startswith("1 numbers are not values Veil can recompute")
    assert result.value == 12.5  # as returned, for the enterprise to look at


def test_a_grouped_count_of_large_groups_passes_in_index_values_form() -> None:
    counts = as_pandas().groupby("machine").size().loc[["press-1", "press-2"]]
    result = check(counts)
    assert result.status == "pass"
    assert result.value == {"index": ["press-1", "press-2"], "values": [60, 35]}
    assert all(type(v) is int for v in result.value["values"])  # type: ignore[index]


def test_a_frame_is_columns_index_rows_and_nan_becomes_none() -> None:
    table = pd.DataFrame(
        {"temperature": [71.25, math.nan], "line": [3, 4]}, index=["press-1", "press-2"]
    )
    result = check(table, given=PUBLIC_GIVEN)  # nothing private given: rules a to c only
    assert result.status == "pass"
    assert result.value == {
        "columns": ["temperature", "line"],
        "index": ["press-1", "press-2"],
        "rows": [[71.25, 3], [None, 4]],
    }


def test_numpy_arrays_and_nested_lists_become_plain_lists() -> None:
    value = {"temperature": np.array([1.5, 2.5]), "line": [np.int64(3), True, None]}
    result = check(value, given=PUBLIC_GIVEN)
    assert result.status == "pass"
    assert result.value == {"temperature": [1.5, 2.5], "line": [3, True, None]}


# ---------------------------------------------------------------- a. type


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [
        Opaque(),
        b"bytes",
        len,
        {1, 2},
        {"temperature": Opaque()},
        pd.DataFrame({"temperature": [[1, 2], [3]]}),
        pd.Series([Opaque(), "x"]),
        np.zeros((2, 2, 2)),
        {frozenset({1}): 2},
        "x" * (MAX_STRING + 1),
    ],
    ids=lambda v: type(v).__name__,
)
def test_anything_but_numbers_strings_and_small_tables_is_blocked(value: object) -> None:
    result = check(value)
    assert result.status == "blocked"
    assert result.value is None
    assert "not a number or small table" in result.reasons[0]


def test_nesting_deeper_than_the_limit_is_blocked() -> None:
    deep: object = 1.5
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert check(deep).status == "blocked"
    shallow: object = 1.5
    for _ in range(MAX_DEPTH):
        shallow = [shallow]
    assert check(shallow, given=PUBLIC_GIVEN).status == "pass"


# ---------------------------------------------------------------- b. size


def test_more_values_than_max_cells_is_blocked() -> None:
    result = check([[1.5] * 20] * 3, max_cells=50)
    assert result.status == "blocked"
    assert result.reasons == ("more than 50 values",)


def test_more_bytes_than_max_bytes_is_blocked() -> None:
    result = check(["y" * 200] * 3, max_bytes=500)
    assert result.status == "blocked"
    assert result.reasons == ("more than 500 bytes as JSON",)


# ---------------------------------------------------------------- c. row-level


def test_a_list_as_long_as_half_the_rows_is_blocked_as_row_level() -> None:
    blocked = check(as_pandas()["line"].iloc[: ROWS // 2].tolist())
    assert blocked.status == "blocked"
    assert blocked.reasons[0].startswith("looks row-level")
    assert check([1, 2, 3], given=PUBLIC_GIVEN).status == "pass"


def test_a_confidential_value_is_blocked_naming_the_column_not_the_value() -> None:
    value = PRIVATE["yield_pct"][7]
    result = check({"temperature": value})
    assert result.status == "blocked"
    assert result.reasons == ("contains values of confidential column 'yield_pct'",)
    assert str(value) not in " ".join(result.reasons)


def test_a_secret_value_and_a_confidential_string_key_are_blocked() -> None:
    secret = check(PRIVATE["recipe"].max())  # a maximum is a row's value too
    assert secret.reasons == ("contains values of secret column 'recipe'",)
    keyed = check({"supplier-3": 1})
    assert keyed.status == "blocked"
    assert keyed.reasons == ("contains values of confidential column 'supplier'",)


def test_a_few_raw_rows_of_an_internal_column_are_held() -> None:
    result = check(as_pandas()[["machine", "temperature"]].head(3))
    assert result.status == "held"
    assert "contains values of internal column 'temperature' (a row, min or max)" in (
        result.reasons
    )


# ---------------------------------------------------------------- d. tables


def test_a_small_cell_is_held_naming_its_key_and_the_threshold() -> None:
    result = check(as_pandas().groupby("machine")["temperature"].count())
    assert result.status == "held"
    assert result.reasons == ("cell machine=press-3: fewer than 10 rows",)
    assert result.value == {"index": list(MACHINES), "values": [60, 35, 5]}


def test_cells_are_counted_on_the_private_frame_not_taken_from_the_output() -> None:
    # The function claims press-3 has 500 rows: the check recounts it (5 rows).
    result = check({"press-1": 60, "press-3": 500})
    assert "cell machine=press-3: fewer than 10 rows" in result.reasons


def test_a_cross_table_is_checked_cell_by_cell() -> None:
    table = pd.crosstab(as_pandas()["machine"], as_pandas()["shift"])
    result = check(table)
    assert result.status == "held"
    assert set(result.reasons) == {
        "cell machine=press-3, shift=day: fewer than 10 rows",
        "cell machine=press-3, shift=night: fewer than 10 rows",
    }


def test_statistic_names_in_a_frames_columns_are_labels_not_keys() -> None:
    table = as_pandas().groupby("machine").agg(mean_temp=("temperature", "mean"))
    result = check(table, labels=("mean_temp",))
    assert result.reasons == ("cell machine=press-3: fewer than 10 rows",)
    assert result.value["columns"] == ["mean_temp"]  # type: ignore[index]


def test_integer_keys_of_an_internal_column_are_checked() -> None:
    by_line = as_pandas().groupby("line")["temperature"].mean()
    assert check(by_line).status == "pass"  # 20 rows per line
    assert check(by_line, private=PRIVATE.head(30)).status == "held"  # 6 rows per line


def test_keys_of_no_given_column_cannot_be_checked_and_are_held() -> None:
    result = check({"mean_temperature": 71.5, "spread": 3.5}, labels=("spread",))
    assert result.status == "held"
    assert "cannot check table cells: their keys are not values of a given key column" in (
        result.reasons
    )
    # A column not given to the function is no key either.
    shifts = check({"day": 50, "night": 50}, given=("machine",))
    assert shifts.status == "held"


def test_a_whole_dataset_smaller_than_min_count_is_held() -> None:
    result = check(3.5, private=PRIVATE.head(6))
    assert "the whole dataset has fewer than 10 rows" in result.reasons


def test_cells_count_individuals_with_an_id_privacy_unit() -> None:
    schema = DatasetSchema(
        columns=(
            ColumnSpec("worker", ColumnType.INTEGER, INTERNAL, lower=0, upper=1000),
            ColumnSpec("shift", ColumnType.STRING, PUBLIC, categories=("day", "night")),
        ),
        privacy_unit=PrivacyUnit(id_column="worker", max_rows_per_id=20),
    )
    # 40 "day" rows from only 4 workers: enough rows, too few individuals.
    private = pl.DataFrame(
        {
            "worker": [i % 4 for i in range(40)] + list(range(100, 140)),
            "shift": ["day"] * 40 + ["night"] * 40,
        }
    )
    result = check_output({"day": 40, "night": 40}, private, schema, ("shift",), min_count=10)
    assert result.reasons == ("cell shift=day: fewer than 10 individuals",)


def test_min_count_below_the_platform_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="min_count"):
        check(1.5, min_count=3)


# ---------------------------------------------------------------- e. DP


def test_dp_output_passes_when_every_number_came_from_the_helpers() -> None:
    released = (51.73, 18.0)
    result = check({"press-1": 51.73, "press-3": 18.0}, dp_required=True, dp_values=released)
    assert result.status == "pass"  # DP values are exempt from the cell threshold


@pytest.mark.parametrize(
    "value",
    [{"press-1": 51.73, "press-2": 52.0}, {"press-1": True}, 51.7, "51.73", {"51.73": 51.73}],
    ids=["exact-number", "boolean", "rounded", "number-as-text", "number-as-key"],
)
def test_dp_required_blocks_anything_not_returned_by_the_helpers(value: object) -> None:
    result = check(value, dp_required=True, dp_values=(51.73,))
    assert result.status == "blocked"
    assert result.reasons[0].startswith("confidential columns need DP output")


def test_category_labels_are_fine_in_dp_output() -> None:
    result = check({"line": {3: 7.25}}, dp_required=True, dp_values=(7.25,))
    assert result.status == "pass"


# ---------------------------------------------------------------- d. text


def test_free_text_is_held_and_blocked_when_dp_is_required() -> None:
    temperatures = "t" + "-".join(f"{t:.1f}" for t in PRIVATE["temperature"][:5])
    held = check({"note": temperatures}, labels=("note",))
    assert held.status == "held"
    assert any(r.startswith("free text: 1 strings") for r in held.reasons)
    assert temperatures not in " ".join(held.reasons)
    blocked = check([temperatures], dp_required=True, dp_values=())
    assert blocked.status == "blocked"
    assert any(r.startswith("free text") for r in blocked.reasons)


def test_labels_of_the_code_column_names_and_categories_are_not_free_text() -> None:
    mean = PRIVATE["temperature"].mean()
    value = {"summary": {"temperature": mean}, "unit": "celsius", "shift": "night"}
    result = check(value, labels=("summary", "unit", "celsius"))
    assert result.status == "pass", result.reasons


# ---------------------------------------------------------------- e. numbers Veil recomputes


def _split(values: list[float], parts: int) -> list[list[float]]:
    return [values[i::parts] for i in range(parts)]


@pytest.mark.parametrize(
    "transform",
    [
        lambda t: t * 1.8 + 32,  # Fahrenheit
        lambda t: t + 1e-9,  # a nudge that defeats an equality test
        lambda t: round(t, 1),  # rounding
        lambda t: -t,
    ],
    ids=["affine", "nudged", "rounded", "negated"],
)
def test_row_values_however_transformed_and_split_are_never_released(transform: object) -> None:
    values = [transform(t) for t in PRIVATE["temperature"].to_list()]  # type: ignore[operator]
    # Split under the row-level limit: 25 lists of 4 values, labelled by the code.
    output = {f"part{i}": part for i, part in enumerate(_split(values, 25))}
    result = check(output, labels=tuple(output))
    assert result.status == "held"
    assert any("not values Veil can recompute" in r for r in result.reasons)


def test_a_released_number_is_veils_not_the_functions() -> None:
    true = PRIVATE["temperature"].mean()
    # A function hiding bits in the last digits of a correct mean, or rounding it.
    for returned in (true * (1 + 3e-10), round(true, 2)):
        result = check({"temperature": returned})
        assert result.status == "pass"
        assert result.value == {"temperature": true}  # Veil's value, not the function's


def test_a_sum_that_one_unit_dominates_is_held() -> None:
    skewed = PRIVATE.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(1e6).otherwise(pl.col("temperature"))
        .alias("temperature")
    )  # fmt: skip
    total = skewed["temperature"].sum()
    assert check(total, private=skewed).status == "held"
    assert check(PRIVATE["temperature"].sum()).status == "pass"


# ---------------------------------------------------------------- f. the same as on the mock


MOCK = private_frame().with_columns(pl.col("temperature") + 5)  # other values, same keys


def _mock_inspection(value: object, **options: Any) -> Any:
    from analytics.output_checks import inspect_output

    options.setdefault("min_count", 10)
    return inspect_output(value, MOCK, SCHEMA, GIVEN, **options)


def test_an_output_shaped_otherwise_than_on_the_mock_is_held() -> None:
    def by_machine(frame: pl.DataFrame, machines: list[str]) -> pd.Series:
        return frame.to_pandas().groupby("machine")["temperature"].mean().loc[machines]

    both = ["press-1", "press-2"]
    mock = _mock_inspection(by_machine(MOCK, ["press-1"]))
    result = check(by_machine(PRIVATE, both), mock=mock)
    assert result.status == "held"
    assert any("shape" in r for r in result.reasons)
    same = _mock_inspection(by_machine(MOCK, both))
    assert check(by_machine(PRIVATE, both), mock=same).status == "pass"


def test_a_statistic_chosen_by_the_data_is_held() -> None:
    data = as_pandas()
    mock = _mock_inspection({"x": MOCK["temperature"].mean()}, labels=("x",))
    # On the private data the code returned the count where the mock run had the mean.
    result = check({"x": len(data)}, mock=mock, labels=("x",))
    assert result.status == "held"
    assert any("not the same statistic" in r for r in result.reasons)


def test_dp_calls_that_differ_from_the_mock_block_a_dp_output() -> None:
    mock = _mock_inspection(
        {"press-1": 40.0}, dp_required=True, dp_values=(40.0,), dp_calls=("count a",)
    )
    result = check(
        {"press-1": 51.73}, dp_required=True, dp_values=(51.73,), dp_calls=("count b",), mock=mock
    )
    assert result.status == "blocked"
    assert any("DP helper calls differ" in r for r in result.reasons)
    same = _mock_inspection(
        {"press-1": 40.0}, dp_required=True, dp_values=(40.0,), dp_calls=("count b",)
    )
    released = check(
        {"press-1": 51.73}, dp_required=True, dp_values=(51.73,), dp_calls=("count b",), mock=same
    )
    assert released == OutputCheck("pass", (), {"press-1": 51.73})


# ---------------------------------------------------------------- g. released as tier 2 would


def test_released_aggregates_are_perturbed_exactly_as_tier_2_releases_the_same_cells() -> None:
    from analytics.cellkey import key_halves, record_keys
    from analytics.output_cells import RECORD_KEYS
    from analytics.schema import Aggregate, AggregateKind
    from analytics.sdc import TableQuery, run_table_query

    secret = bytes(range(32))
    high, low = key_halves(record_keys(PRIVATE, SCHEMA, secret))
    keyed = PRIVATE.with_columns(pl.Series(RECORD_KEYS[0], high), pl.Series(RECORD_KEYS[1], low))
    data = as_pandas()
    big = ["press-1", "press-2"]
    output = {
        "rows": data.groupby("machine").size().loc[big],
        "mean_temp": data.groupby("machine")["temperature"].mean().loc[big],
        "total_temp": data.groupby("machine")["temperature"].sum().loc[big],
    }
    result = check_output(output, keyed, SCHEMA, GIVEN, min_count=10, labels=tuple(output))
    assert result.status == "pass", result.reasons
    aggregates = (
        Aggregate(AggregateKind.COUNT),
        Aggregate(AggregateKind.MEAN, "temperature"),
        Aggregate(AggregateKind.SUM, "temperature"),
    )
    table = run_table_query(PRIVATE, SCHEMA, TableQuery(aggregates, ("machine",)), secret=secret)
    cells = {c.key["machine"]: c.values for c in table.cells if c.key["machine"] in big}
    released = result.value
    assert isinstance(released, dict)
    for position, machine in enumerate(big):
        assert released["rows"]["values"][position] == cells[machine]["count"]
        assert released["mean_temp"]["values"][position] == cells[machine]["mean(temperature)"]
        assert released["total_temp"]["values"][position] == cells[machine]["sum(temperature)"]
    # Perturbed, not exact: differencing tier-5 outputs is no better than tier-2 tables.
    exact = [float(v) for v in output["total_temp"]]
    assert released["total_temp"]["values"] != exact
