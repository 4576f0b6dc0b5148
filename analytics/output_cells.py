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
from dataclasses import dataclass
from typing import Any, Final

import polars as pl

from analytics import cellkey
from analytics.schema import ColumnClass, ColumnType, DatasetSchema
from analytics.sdc import PLATFORM_MIN_COUNT

Scalar = bool | int | float | str | None
Key = tuple[Scalar, ...]
KeyText = tuple[str, ...]

_KEY_TYPES: Final = (ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN)
_NUMERIC: Final = (ColumnType.INTEGER, ColumnType.FLOAT)
_MAX_COMBINATIONS: Final = 16
#: Columns of the record keys' halves (``analytics.cellkey``), when the worker adds them to
#: the private frame: then released statistics are perturbed by the cell-key method.
RECORD_KEYS: Final = ("#high", "#low")
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


@dataclass(frozen=True)
class Statistic:
    """A cell's statistic: its exact value (what an output's number is compared with) and
    the value Veil releases for it — perturbed by the cell-key method as tier 2 releases
    the same cell, when the frame carries record keys; else the exact value."""

    exact: float
    released: float


class _Released:
    """The released values of one cell (a row of the cells' aggregates)."""

    def __init__(self, schema: DatasetSchema, row: dict[str, Any], keyed: bool) -> None:
        self.schema, self.row = schema, row
        self.key = cellkey.cell_key(row[RECORD_KEYS[0]], row[RECORD_KEYS[1]]) if keyed else None

    def count(self, count: int, most: int) -> Statistic:
        if self.key is None:
            return Statistic(count, count)
        return Statistic(count, cellkey.perturb_count(count, most, self.key, PLATFORM_MIN_COUNT))

    def sum(self, column: str) -> Statistic:
        total = self.row[f"sum:{column}"]
        if self.key is None:
            return Statistic(total, total)
        return Statistic(total, self._perturbed_sum(column))

    def mean(self, column: str) -> Statistic:
        values = self.row[f"n:{column}"]
        exact = self.row[f"sum:{column}"] / values
        if self.key is None:
            return Statistic(exact, exact)
        count = cellkey.perturb_count(values, self.row[f"most:{column}"], self.key,
                                      PLATFORM_MIN_COUNT)  # fmt: skip
        return Statistic(exact, self._perturbed_sum(column) / count if count else math.nan)

    def _perturbed_sum(self, column: str) -> float:
        spec = self.schema.column(column)
        bound = max(abs(spec.lower or 0.0), abs(spec.upper or 0.0))
        assert self.key is not None
        return cellkey.perturb_sum(
            self.row[f"sum:{column}"], self.row[f"largest:{column}"] or 0.0, self.key, column,
            bound,
        )  # fmt: skip


class FrameFacts:
    """What the checks need to know of one frame, computed when first asked."""

    def __init__(self, frame: pl.DataFrame, schema: DatasetSchema, given: Sequence[str]) -> None:
        self.frame, self.schema = frame, schema
        self.given = [c for c in dict.fromkeys(given) if c in frame.columns]
        self._key_values: dict[str, frozenset[str]] = {}
        self._statistics: dict[tuple[str, ...], dict[KeyText, dict[str, Statistic]]] = {}
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
        return {cell: int(values["count"].exact) for cell, values in stats.items()}

    def statistics(self, by: Sequence[str]) -> dict[KeyText, dict[str, Statistic]]:
        """Per cell of ``by`` (all rows when empty): the statistics a number may be
        recognised as — ``count`` (units), ``rows``, ``sum:<column>`` and ``mean:<column>``
        of each given numeric column (those a dominated cell's sum would reveal left out) —
        each exact and as Veil releases it (see ``Statistic``)."""
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
    ) -> tuple[dict[KeyText, dict[str, Statistic]], dict[KeyText, list[str]]]:
        numeric = self._numeric()
        unit = self.unit_column
        keyed = RECORD_KEYS[0] in self.frame.columns
        keys = [_key_expr(c).alias(f"#k{i}") for i, c in enumerate(by)]
        names = [f"#k{i}" for i in range(len(by))] if by else ["#all"]
        unit_expr = pl.col(unit) if unit is not None else pl.int_range(pl.len())
        framed = self.frame.select(
            *keys, *([] if by else [pl.lit("").alias("#all")]), unit_expr.alias(_UNIT),
            *numeric, *(RECORD_KEYS if keyed else ()),
        )  # fmt: skip
        # One row per (cell, unit): a unit's contribution is the sum of its rows' values.
        per_unit = framed.group_by([*names, _UNIT]).agg(
            pl.len().alias("#rows"),
            *[pl.col(c).sum().alias(c) for c in numeric],
            *[pl.col(c).count().alias(f"n:{c}") for c in numeric],
            *[pl.col(k).first() for k in (RECORD_KEYS if keyed else ())],  # a unit's key
        )
        cells = per_unit.group_by(names).agg(
            pl.len().alias("#units"),
            pl.col("#rows").sum().alias("#rows"),
            pl.col("#rows").max().alias("#most"),
            *[pl.col(k).sum() for k in (RECORD_KEYS if keyed else ())],
            *[pl.col(c).sum().alias(f"sum:{c}") for c in numeric],
            *[pl.col(c).abs().sum().alias(f"abs:{c}") for c in numeric],
            *[pl.col(c).abs().max().alias(f"largest:{c}") for c in numeric],
            *[pl.col(c).abs().top_k(NK_N).sum().alias(f"top:{c}") for c in numeric],
            *[pl.col(f"n:{c}").sum() for c in numeric],
            *[pl.col(f"n:{c}").max().alias(f"most:{c}") for c in numeric],
        )
        statistics: dict[KeyText, dict[str, Statistic]] = {}
        dominated: dict[KeyText, list[str]] = {}
        for row in cells.iter_rows(named=True):
            cell: KeyText = tuple(row[n] for n in names) if by else ()
            released = _Released(self.schema, row, keyed)
            values = {"count": released.count(row["#units"], 1),
                      "rows": released.count(row["#rows"], row["#most"])}  # fmt: skip
            for c in numeric:
                absolute, top = row[f"abs:{c}"] or 0.0, row[f"top:{c}"] or 0.0
                if absolute > 0 and top > NK_K * absolute:
                    dominated.setdefault(cell, []).append(c)
                    continue
                values[f"sum:{c}"] = released.sum(c)
                if row[f"n:{c}"]:
                    values[f"mean:{c}"] = released.mean(c)
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
