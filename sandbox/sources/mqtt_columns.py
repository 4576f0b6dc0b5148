"""Rows of JSON values as a polars frame: one type per column, or JSON text where mixed.

A payload's values are JSON: booleans, integers, numbers, strings, null, lists, objects.
A column keeps the one type its values share (integers and numbers together are
numbers); a column of mixed or nested values becomes JSON text, so the declaration's
validation reports what was expected instead of the frame failing to build.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import polars as pl

_SIMPLE: tuple[tuple[type, pl.DataType], ...] = (
    (bool, pl.Boolean()),
    (int, pl.Int64()),
    (float, pl.Float64()),
    (str, pl.String()),
)


def _dtype(values: Sequence[Any]) -> pl.DataType | None:
    """The one simple type of the non-null values (Null when all are null), or None when
    they are of several types."""
    kinds = {type(value) for value in values if value is not None}
    if not kinds:  # null: the batches of a run join on the others' type
        return pl.Null()
    if kinds <= {int, float}:
        return pl.Float64() if float in kinds else pl.Int64()
    if len(kinds) == 1:
        (kind,) = kinds
        for python, dtype in _SIMPLE:
            if kind is python:
                return dtype
    return None


def _series(name: str, values: list[Any]) -> pl.Series:
    dtype = _dtype(values)
    if dtype is None:
        text = [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
        return pl.Series(name, text, dtype=pl.String())
    if isinstance(dtype, pl.Int64) and any(
        v is not None and not -(2**63) <= v < 2**63 for v in values
    ):
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String())
    if isinstance(dtype, pl.Float64):
        values = [None if v is None else float(v) for v in values]
    return pl.Series(name, values, dtype=dtype)


def frame(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """The frame of ``rows`` with ``columns`` (a value a row lacks is null).

    ``received_at`` is a UTC datetime column; every other column is typed by its values.
    """
    series = []
    for name in columns:
        values = [row.get(name) for row in rows]
        if name == "received_at":
            series.append(pl.Series(name, values, dtype=pl.Datetime("us", "UTC")))
        else:
            series.append(_series(name, values))
    return pl.DataFrame(series)
