"""Tier 1: mock data, generated from a dataset's declaration alone.

A provider writes and tests a job against mock rows before it ever runs on the
real data.  The mock must not leak anything about that data, so these functions
do not even take it: every value comes from the declaration (types, bounds,
categories, null rates, privacy unit) and a seeded pseudo-random generator.

What the mock looks like
------------------------
* The declared columns, in declared order, typed as ingestion types them:
  integer -> Int64, float -> Float64, string -> String, boolean -> Boolean.
* Integers: uniform over the whole numbers within the declared bounds, both ends
  included.  Floats: uniform within the declared bounds.
* Strings with declared categories: uniform over the categories.  Strings
  without: synthetic tokens ``f"{column}-{i:05d}"``, ``i`` uniform in
  ``[0, rows)`` (so some tokens repeat, as real keys do).
* Booleans: true or false with equal chance.
* Nulls: only in nullable columns, in exactly ``round(null_rate * rows)`` rows
  chosen at random (no nulls when ``null_rate`` is None).
* The privacy unit's id column (if any) never has nulls; its values are spread so
  that each id has at most ``max_rows_per_id`` rows (ids are drawn from the
  declared bounds or categories, else synthetic tokens as above).

Reproducible: the same (schema, rows, seed) gives the same frame, each column
from its own stream of ``numpy.random.SeedSequence(seed)``, so that adding a
column does not change the others.  This is synthetic test data, not a privacy
mechanism: nothing here protects anything, and none of it is secret.
"""

from __future__ import annotations

import io
import math
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from analytics.schema import ColumnSpec, ColumnType, DatasetSchema

MAX_ROWS: Final = 1_000_000
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# numpy draws distinct integers from ranges up to this size; a larger id range is cut to it.
_MAX_ID_SPAN: Final = 2**62


def mock_frame(schema: DatasetSchema, rows: int, seed: int) -> pl.DataFrame:
    """Synthetic rows for ``schema``: ``rows`` of them (1 to ``MAX_ROWS``), from ``seed`` (>= 0).

    Raises ValueError for a bad row count or seed, or a declaration that cannot
    be mocked (a numeric column without bounds, an id column whose declared
    values are too few for ``rows``); messages name columns, never values.
    """
    _check_arguments(rows, seed)
    unit = schema.privacy_unit
    streams = np.random.SeedSequence(seed).spawn(len(schema.columns))
    columns = []
    for spec, stream in zip(schema.columns, streams, strict=True):
        rng = np.random.Generator(np.random.PCG64(stream))
        if spec.name == unit.id_column:
            columns.append(_id_values(spec, rows, unit.max_rows_per_id, rng))
        else:
            columns.append(_with_nulls(_values(spec, rows, rng), spec, rng))
    return pl.DataFrame(columns)


def mock_csv(schema: DatasetSchema, rows: int, seed: int) -> bytes:
    """``mock_frame`` as UTF-8 CSV with a header row (nulls as empty fields)."""
    return mock_frame(schema, rows, seed).write_csv().encode("utf-8")


def mock_parquet(schema: DatasetSchema, rows: int, seed: int) -> bytes:
    """``mock_frame`` as a Parquet file, in memory."""
    buffer = io.BytesIO()
    mock_frame(schema, rows, seed).write_parquet(buffer)
    return buffer.getvalue()


def _check_arguments(rows: int, seed: int) -> None:
    # bool is an int subclass; True rows or seed is a caller's mistake, not 1.
    if type(rows) is not int or not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows: expected an integer from 1 to {MAX_ROWS}")
    if type(seed) is not int or seed < 0:
        raise ValueError("seed: expected a non-negative integer")


def _values(spec: ColumnSpec, rows: int, rng: np.random.Generator) -> pl.Series:
    """``rows`` values of one (non-id) column, without nulls."""
    if spec.type is ColumnType.INTEGER:
        low, high = _integer_bounds(spec)
        drawn = rng.integers(low, high, size=rows, endpoint=True, dtype=np.int64)
        return pl.Series(spec.name, drawn, dtype=pl.Int64)
    if spec.type is ColumnType.FLOAT:
        low_f, high_f = _float_bounds(spec)
        share = rng.random(rows)
        # Mixing the ends, rather than low + (high - low) * share, cannot overflow when the
        # bounds span more than the largest float; clipping undoes any rounding past them.
        drawn_f = np.clip(low_f * (1.0 - share) + high_f * share, low_f, high_f)
        return pl.Series(spec.name, drawn_f, dtype=pl.Float64)
    if spec.type is ColumnType.BOOLEAN:
        return pl.Series(spec.name, rng.random(rows) < 0.5, dtype=pl.Boolean)
    if spec.categories:
        picks = rng.integers(0, len(spec.categories), size=rows)
        return pl.Series(spec.name, spec.categories, dtype=pl.String).gather(picks)
    return _tokens(spec.name, rng.integers(0, rows, size=rows))


def _tokens(name: str, numbers: npt.NDArray[np.int64]) -> pl.Series:
    """Synthetic strings ``f"{name}-{i:05d}"``, built by polars (fast for a million rows)."""
    digits = pl.Series(name, numbers, dtype=pl.Int64).cast(pl.String).str.zfill(5)
    return (f"{name}-" + digits).alias(name)


def _integer_bounds(spec: ColumnSpec) -> tuple[int, int]:
    """The whole numbers within the declared bounds (as far as Int64 reaches)."""
    low, high = _float_bounds(spec)
    low_i, high_i = max(math.ceil(low), _INT64_MIN), min(math.floor(high), _INT64_MAX)
    if low_i > high_i:
        raise ValueError(f"column {spec.name!r}: expected bounds that hold a whole number")
    return low_i, high_i


def _float_bounds(spec: ColumnSpec) -> tuple[float, float]:
    low, high = spec.lower, spec.upper
    finite = all(
        isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)
        for b in (low, high)
    )
    if not finite or low is None or high is None or low > high:
        raise ValueError(f"column {spec.name!r}: expected finite bounds with lower <= upper")
    return float(low), float(high)


def _with_nulls(values: pl.Series, spec: ColumnSpec, rng: np.random.Generator) -> pl.Series:
    """Empty exactly ``round(null_rate * rows)`` rows of a nullable column, chosen at random."""
    rate = spec.null_rate
    if not spec.nullable or rate is None:
        return values
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"column {spec.name!r}: expected a null_rate between 0 and 1")
    empty = round(rate * len(values))
    if empty == 0:
        return values
    where = np.sort(rng.choice(len(values), size=empty, replace=False))  # scatter wants order
    return values.scatter(where, None)


def _id_values(spec: ColumnSpec, rows: int, per_id: int, rng: np.random.Generator) -> pl.Series:
    """An id column: each of ``ceil(rows / per_id)`` distinct ids on at most ``per_id`` rows."""
    if type(per_id) is not int or per_id < 1:
        raise ValueError(f"column {spec.name!r}: expected max_rows_per_id of at least 1")
    ids = -(-rows // per_id)
    # Id k gets rows k*per_id .. k*per_id + per_id - 1 (the last id fewer), then rows shuffle.
    owner = np.repeat(np.arange(ids), per_id)[:rows]
    rng.shuffle(owner)
    return _distinct_ids(spec, ids, rng).gather(owner)


def _distinct_ids(spec: ColumnSpec, ids: int, rng: np.random.Generator) -> pl.Series:
    """``ids`` distinct values that the declaration allows in the id column."""
    too_few = f"column {spec.name!r}: expected declared values for at least {ids} distinct ids"
    if spec.type is ColumnType.INTEGER:
        low, high = _integer_bounds(spec)
        span = min(high - low + 1, _MAX_ID_SPAN)
        if span < ids:
            raise ValueError(too_few)
        offsets = rng.choice(span, size=ids, replace=False)
        # low + offset <= high, so the int64 sum cannot overflow.
        return pl.Series(spec.name, np.int64(low) + offsets.astype(np.int64), dtype=pl.Int64)
    if spec.type is ColumnType.STRING and spec.categories:
        if len(spec.categories) < ids:
            raise ValueError(too_few)
        order = rng.permutation(len(spec.categories))[:ids]
        return pl.Series(spec.name, spec.categories, dtype=pl.String).gather(order)
    if spec.type is ColumnType.STRING:
        return _tokens(spec.name, rng.permutation(ids))
    if spec.type is ColumnType.BOOLEAN:
        if ids > 2:
            raise ValueError(too_few)
        return pl.Series(spec.name, rng.permutation([False, True])[:ids], dtype=pl.Boolean)
    raise ValueError(f"column {spec.name!r}: expected an id column that is not float")
