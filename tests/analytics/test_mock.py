"""Tier 1 mock data: shaped by the declaration only, reproducible, never from the data."""

from __future__ import annotations

import inspect
import io
import math

import polars as pl
import pytest

from analytics import mock
from analytics.mock import MAX_ROWS, mock_csv, mock_frame, mock_parquet
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit

PUBLIC, INTERNAL = ColumnClass.PUBLIC, ColumnClass.INTERNAL
REGIONS = ("north", "south", "east", "west")
SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("patient", ColumnType.INTEGER, INTERNAL, lower=1, upper=10**9),
        ColumnSpec("age", ColumnType.INTEGER, INTERNAL, lower=17.5, upper=90.5),
        ColumnSpec("income", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, lower=-50, upper=250.0),
        ColumnSpec("region", ColumnType.STRING, PUBLIC, categories=REGIONS),
        ColumnSpec("note", ColumnType.STRING, ColumnClass.SECRET, nullable=True, null_rate=0.25),
        ColumnSpec("smoker", ColumnType.BOOLEAN, INTERNAL, nullable=True, null_rate=0.1),
        ColumnSpec("weight", ColumnType.FLOAT, INTERNAL, lower=40, upper=150, nullable=True),
        ColumnSpec("code", ColumnType.STRING, INTERNAL, null_rate=0.5),  # not nullable
    ),
    privacy_unit=PrivacyUnit("patient", max_rows_per_id=3),
)
ROWS = 4000


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return mock_frame(SCHEMA, ROWS, seed=7)


def test_columns_order_and_dtypes_are_those_of_ingestion(frame: pl.DataFrame) -> None:
    assert frame.columns == list(SCHEMA.names)
    assert frame.dtypes == [
        pl.Int64,
        pl.Int64,
        pl.Float64,
        pl.String,
        pl.String,
        pl.Boolean,
        pl.Float64,
        pl.String,
    ]
    assert frame.height == ROWS


def test_numbers_stay_within_declared_bounds(frame: pl.DataFrame) -> None:
    ages = frame["age"]
    assert (ages.min(), ages.max()) == (18, 90)  # whole numbers within 17.5..90.5, both ends
    assert ages.n_unique() == 73
    income = frame["income"]
    assert -50 <= income.min() <= -45 and 245 <= income.max() <= 250  # type: ignore[operator]


def test_categories_are_uniform_and_tokens_are_synthetic(frame: pl.DataFrame) -> None:
    shares = frame["region"].value_counts(normalize=True)
    assert set(shares["region"]) == set(REGIONS)
    # Each share is 1/4; the binomial standard error at 4000 rows is under 0.007.
    assert all(abs(p - 0.25) < 0.04 for p in shares["proportion"])
    notes = frame["note"].drop_nulls()
    assert notes.str.contains(r"^note-\d{5,}$").all()
    assert abs(frame["smoker"].drop_nulls().mean() - 0.5) < 0.04  # type: ignore[operator]


def test_nulls_follow_the_declared_rate_in_nullable_columns_only(frame: pl.DataFrame) -> None:
    nulls = frame.null_count().row(0, named=True)
    # Exactly round(rate * rows) nulls: the tolerance is the rounding, under one row.
    assert nulls["note"] == round(0.25 * ROWS)
    assert nulls["smoker"] == round(0.1 * ROWS)
    assert nulls["weight"] == 0  # nullable, but no declared rate
    assert nulls["code"] == 0  # a rate, but not nullable
    assert sum(nulls.values()) == nulls["note"] + nulls["smoker"]


def test_each_id_has_at_most_max_rows_per_id(frame: pl.DataFrame) -> None:
    per_id = frame["patient"].value_counts()["count"]
    assert per_id.max() == 3
    assert frame["patient"].n_unique() == math.ceil(ROWS / 3)
    assert frame["patient"].min() >= 1  # type: ignore[operator]


def test_ids_from_categories_or_tokens() -> None:
    spec = ColumnSpec("who", ColumnType.STRING, INTERNAL, categories=("a", "b", "c"))
    schema = DatasetSchema(columns=(spec,), privacy_unit=PrivacyUnit("who", max_rows_per_id=2))
    assert mock_frame(schema, 6, seed=1)["who"].value_counts()["count"].to_list() == [2, 2, 2]
    with pytest.raises(ValueError, match="'who': expected declared values for at least 4"):
        mock_frame(schema, 7, seed=1)
    tokens = DatasetSchema(
        columns=(ColumnSpec("who", ColumnType.STRING, INTERNAL),),
        privacy_unit=PrivacyUnit("who", max_rows_per_id=1),
    )
    assert mock_frame(tokens, 50, seed=1)["who"].n_unique() == 50


def test_same_seed_same_frame_and_another_seed_another() -> None:
    first = mock_frame(SCHEMA, 500, seed=3)
    assert first.equals(mock_frame(SCHEMA, 500, seed=3))
    other = mock_frame(SCHEMA, 500, seed=4)
    assert not first.equals(other)
    assert all(not first[c].equals(other[c]) for c in SCHEMA.names)


def test_a_column_does_not_change_when_others_are_added() -> None:
    alone = DatasetSchema(columns=SCHEMA.columns[:2])
    assert mock_frame(alone, 100, seed=5)["age"].equals(mock_frame(SCHEMA, 100, seed=5)["age"])


def test_the_mock_does_not_depend_on_the_data() -> None:
    # Nothing to pass data through: only the declaration, a row count and a seed.
    for function in (mock_frame, mock_csv, mock_parquet):
        parameters = inspect.signature(function).parameters
        assert list(parameters) == ["schema", "rows", "seed"]
        assert [str(p.annotation) for p in parameters.values()] == ["DatasetSchema", "int", "int"]
    # So two datasets with the same declaration, whatever their rows, get the same mock.
    hospital_a = mock_frame(SCHEMA, 200, seed=100)  # stand-ins for two stored datasets
    hospital_b = mock_frame(SCHEMA, 200, seed=200)
    assert not hospital_a.equals(hospital_b)
    mock_a, mock_b = mock_frame(SCHEMA, 200, seed=9), mock_frame(SCHEMA, 200, seed=9)
    assert mock_a.equals(mock_b)


def test_csv_and_parquet_hold_the_frame() -> None:
    frame = mock_frame(SCHEMA, 300, seed=2)
    from_csv = pl.read_csv(io.BytesIO(mock_csv(SCHEMA, 300, seed=2)), schema=frame.schema)
    assert from_csv.equals(frame)
    assert pl.read_parquet(io.BytesIO(mock_parquet(SCHEMA, 300, seed=2))).equals(frame)


@pytest.mark.parametrize("rows", [0, -1, MAX_ROWS + 1, True, 2.0])
def test_row_count_is_bounded(rows: int) -> None:
    with pytest.raises(ValueError, match="rows: expected an integer from 1 to 1000000"):
        mock_frame(SCHEMA, rows, seed=1)


def test_a_million_rows_are_allowed_and_a_negative_seed_is_not() -> None:
    assert MAX_ROWS == 1_000_000
    small = DatasetSchema(columns=(ColumnSpec("flag", ColumnType.BOOLEAN, PUBLIC),))
    assert mock_frame(small, MAX_ROWS, seed=0).height == MAX_ROWS
    with pytest.raises(ValueError, match="seed"):
        mock_frame(small, 1, seed=-1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ColumnSpec("x", ColumnType.FLOAT, INTERNAL), "'x': expected finite bounds"),
        (ColumnSpec("x", ColumnType.INTEGER, INTERNAL, lower=0.2, upper=0.8), "a whole number"),
        (
            ColumnSpec("x", ColumnType.STRING, INTERNAL, nullable=True, null_rate=1.5),
            "'x': expected a null_rate between 0 and 1",
        ),
    ],
)
def test_declarations_that_cannot_be_mocked_are_refused(spec: ColumnSpec, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        mock_frame(DatasetSchema(columns=(spec,)), 10, seed=1)


def test_mock_names_nothing_noisy() -> None:
    # Synthetic data, not a privacy mechanism: keep DP vocabulary out of it.
    source = inspect.getsource(mock).lower()
    assert "noise" not in source and "laplace" not in source
