"""Tier 5 output checks: what one frame (the private data, or the mock) says about an output.

``FrameFacts`` answers, for one frame and the columns given to the function:

* which columns can key a table — the given public or internal string, integer and
  boolean columns, the privacy unit's id excepted — and their values (as key texts:
  integers in decimal, booleans ``true``/``false``, null as ``""``);
* which key columns a table's keys belong to (``columns_of``), and how many units
  (rows, or ids with an id privacy unit) each cell holds;
* the **statistics** of each cell that an output's number may be recognised as: the
  cell's count of units (and of rows), and the sum and mean of each given numeric column
  — the statistics tier 2 releases.  A sum or mean that one or two units dominate (ACRO's
  nk rule, n = 2, k = 0.9) is not offered, so a number equal to it is not recognised;
* which values of non-public columns appear in an output (a row's value, a min or a max).

Everything is computed on the frame, never taken from the output.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Final

import polars as pl

from analytics.schema import ColumnClass, ColumnType, DatasetSchema

Scalar = bool | int | float | str | None
Key = tuple[Scalar, ...]
KeyText = tuple[str, ...]

_KEY_TYPES: Final = (ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN)
_NUMERIC: Final = (ColumnType.INTEGER, ColumnType.FLOAT)
_MAX_COMBINATIONS: Final = 16
#: ACRO's nk-dominance rule: the 2 largest contributions over 90 % of the total.
NK_N: Final = 2
NK_K: Final = 0.9
_UNIT: Final = "#unit"


def key_text(part: Scalar) -> str:
    """A key as tier 2 writes it: integers in decimal, booleans true/false, null as ""."""
    if isinstance(part, bool):
        return "true" if part else "false"
    if isinstance(part, float) and part.is_integer():
        return str(int(part))
    if part is None:
        return ""
    return str(part)


def _key_expr(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String).fill_null("")


class FrameFacts:
    """What the checks need to know of one frame, computed when first asked."""

    def __init__(self, frame: pl.DataFrame, schema: DatasetSchema, given: Sequence[str]) -> None:
        self.frame, self.schema = frame, schema
        self.given = [c for c in dict.fromkeys(given) if c in frame.columns]
        self._key_values: dict[str, frozenset[str]] = {}
        self._statistics: dict[tuple[str, ...], dict[KeyText, dict[str, float]]] = {}
        self._dominated: dict[tuple[str, ...], dict[KeyText, list[str]]] = {}

    def column_class(self, name: str) -> ColumnClass:
        try:
            return self.schema.column(name).column_class
        except KeyError:
            return ColumnClass.SECRET  # undeclared: treated as the most sensitive

    def all_public(self) -> bool:
        """Whether every given column is public (then nothing in the output is private)."""
        return all(self.column_class(c) is ColumnClass.PUBLIC for c in self.given)

    @property
    def unit_column(self) -> str | None:
        unit = self.schema.privacy_unit.id_column
        return unit if unit is not None and unit in self.frame.columns else None

    # ------------------------------------------------------------ keys

    def key_columns(self) -> list[str]:
        """Given public or internal string, integer or boolean columns (not the id)."""
        keys = []
        for name in self.given:
            try:
                spec = self.schema.column(name)
            except KeyError:
                continue
            releasable = spec.column_class in (ColumnClass.PUBLIC, ColumnClass.INTERNAL)
            if (
                releasable
                and spec.type in _KEY_TYPES
                and name != self.schema.privacy_unit.id_column
            ):
                keys.append(name)
        return keys

    def key_values(self, name: str) -> frozenset[str]:
        if name not in self._key_values:
            values = self.frame.select(_key_expr(name)).to_series().unique().to_list()
            self._key_values[name] = frozenset(str(v) for v in values)
        return self._key_values[name]

    def all_key_values(self) -> frozenset[str]:
        values: set[str] = set()
        for name in self.key_columns():
            values |= self.key_values(name)
        return frozenset(values)

    def text_allowed(self, labels: Iterable[str]) -> frozenset[str]:
        """Strings an output may hold: column names, declared categories of the given
        columns, values of the given key columns, and ``labels`` (the approved code's own
        string literals)."""
        allowed = set(self.schema.names) | set(labels) | set(self.all_key_values())
        for name in self.given:
            with contextlib.suppress(KeyError):
                allowed |= {str(c) for c in self.schema.column(name).categories or ()}
        return frozenset(allowed)

    def columns_of(self, cells: Sequence[KeyText]) -> list[tuple[str, ...]]:
        """The key columns a table's keys can belong to, position by position: every
        combination (at most 16) in which each position's keys are values of one column."""
        if not cells:
            return []
        candidates = []
        for position in range(len(cells[0])):
            wanted = {cell[position] for cell in cells}
            matching = [c for c in self.key_columns() if wanted <= self.key_values(c)]
            if not matching:
                return []
            candidates.append(matching)
        return list(itertools.islice(itertools.product(*candidates), _MAX_COMBINATIONS))

    # ------------------------------------------------------------ cells

    def total_units(self) -> int:
        unit = self.unit_column
        return self.frame[unit].n_unique() if unit is not None else self.frame.height

    def units(self, by: Sequence[str]) -> dict[KeyText, int]:
        """Units (rows, or ids with an id privacy unit) per cell of ``by``."""
        stats = self.statistics(by)
        return {cell: int(values["count"]) for cell, values in stats.items()}

    def statistics(self, by: Sequence[str]) -> dict[KeyText, dict[str, float]]:
        """Per cell of ``by`` (all rows when empty): the statistics a number may be
        recognised as — ``count`` (units), ``rows``, ``sum:<column>`` and ``mean:<column>``
        of each given numeric column (those a dominated cell's sum would reveal left out)."""
        key = tuple(by)
        if key not in self._statistics:
            self._statistics[key], self._dominated[key] = self._compute(key)
        return self._statistics[key]

    def dominated(self, by: Sequence[str]) -> dict[KeyText, list[str]]:
        """Per cell of ``by``: the columns whose sum one or two units dominate."""
        self.statistics(by)
        return self._dominated[tuple(by)]

    def _numeric(self) -> list[str]:
        unit = self.schema.privacy_unit.id_column
        return [
            c
            for c in self.given
            if c != unit and c in self.schema.names and self.schema.column(c).type in _NUMERIC
        ]

    def _compute(
        self, by: tuple[str, ...]
    ) -> tuple[dict[KeyText, dict[str, float]], dict[KeyText, list[str]]]:
        numeric = self._numeric()
        unit = self.unit_column
        keys = [_key_expr(c).alias(f"#k{i}") for i, c in enumerate(by)]
        names = [f"#k{i}" for i in range(len(by))]
        unit_expr = pl.col(unit) if unit is not None else pl.int_range(pl.len())
        framed = self.frame.select(*keys, unit_expr.alias(_UNIT), *numeric)
        if not by:
            framed = framed.with_columns(pl.lit("").alias("#all"))
            names = ["#all"]
        # One row per (cell, unit): a unit's contribution is the sum of its rows' values.
        per_unit = framed.group_by([*names, _UNIT]).agg(
            pl.len().alias("#rows"), *[pl.col(c).sum().alias(c) for c in numeric]
        )
        cells = per_unit.group_by(names).agg(
            pl.len().alias("#units"),
            pl.col("#rows").sum().alias("#rows"),
            *[pl.col(c).sum().alias(f"sum:{c}") for c in numeric],
            *[pl.col(c).abs().sum().alias(f"abs:{c}") for c in numeric],
            *[pl.col(c).abs().top_k(NK_N).sum().alias(f"top:{c}") for c in numeric],
        )
        counts = framed.group_by(names).agg(*[pl.col(c).count().alias(f"n:{c}") for c in numeric])
        cells = cells.join(counts, on=names, how="left")
        statistics: dict[KeyText, dict[str, float]] = {}
        dominated: dict[KeyText, list[str]] = {}
        for row in cells.iter_rows(named=True):
            cell: KeyText = tuple(row[n] for n in names) if by else ()
            values: dict[str, float] = {"count": row["#units"], "rows": row["#rows"]}
            for c in numeric:
                absolute, top = row[f"abs:{c}"] or 0.0, row[f"top:{c}"] or 0.0
                if absolute > 0 and top > NK_K * absolute:
                    dominated.setdefault(cell, []).append(c)
                    continue
                values[f"sum:{c}"] = row[f"sum:{c}"]
                if row[f"n:{c}"]:
                    values[f"mean:{c}"] = row[f"sum:{c}"] / row[f"n:{c}"]
            statistics[cell] = values
        return statistics, dominated

    # ------------------------------------------------------------ values in the output

    def disclosive(self, numbers: list[float], strings: list[str], *, block: bool) -> list[str]:
        """Values of confidential/secret (``block``) or internal (not ``block``) columns
        among the output's non-integer numbers and strings."""
        reasons = []
        for name in self.frame.columns:
            kind = self.column_class(name)
            sensitive = kind in (ColumnClass.CONFIDENTIAL, ColumnClass.SECRET)
            if block != sensitive or kind is ColumnClass.PUBLIC:
                continue
            column = self.frame[name]
            found = False
            if column.dtype.is_float() and numbers:
                found = bool(column.is_in(numbers).any())
            elif column.dtype == pl.String and strings and block:
                found = bool(column.is_in(strings).any())
            if found and block:
                reasons.append(f"contains values of {kind} column {name!r}")
            elif found:
                reasons.append(f"contains values of internal column {name!r} (a row, min or max)")
        return reasons


def matches(number: float, value: float | None) -> bool:
    """Whether an output's ``number`` is the statistic ``value``: equal up to the last
    digits of floating point, or ``value`` rounded to the decimals ``number`` shows (at
    most 6), or ``value`` as a 32-bit float."""
    if value is None or not math.isfinite(value):
        return False
    if math.isclose(number, value, rel_tol=1e-9, abs_tol=1e-12):
        return True
    text = repr(float(number))
    if "e" not in text and "." in text:
        decimals = len(text.split(".")[1].rstrip("0"))
        if decimals <= 6 and round(value, decimals) == number:
            return True
    return _as_float32(value) == number


def _as_float32(value: float) -> float:
    import numpy as np

    return float(np.float32(value))
