"""Tier 5: the checks a reviewed function's output passes before it is released.

The trusted parent process runs these on the value the sandboxed run returned, with the
private frame at hand.  The result is "blocked" (never released), "held" (an enterprise
may release it by hand after looking) or "pass".  Rules, in docs/reviewed-code.md:

a. **Type.**  Numbers, booleans, strings of at most ``MAX_STRING`` characters, None,
   lists/tuples/dicts of those nested at most ``MAX_DEPTH`` deep, pandas Series and
   DataFrames (object columns of strings only), numpy arrays (at most 2-D) and scalars.
   Anything else is blocked.  NaN and infinities become None (not a reason by itself).
b. **Size.**  More than ``max_cells`` values, or more than ``max_bytes`` of JSON: blocked.
c. **Row-level.**  A list, dict, Series or frame with at least
   ``max(2, min(ceil(rows / 2), max_cells))`` entries: blocked.  A non-integer number
   equal to a value of a confidential or secret float column, or a string (value or key)
   equal to a value of a confidential or secret string column: blocked, naming the
   column.  The same for an internal float column: held (a row's value, a min or a max).
d. **Tables.**  Numbers are cells, keyed by the dict keys, Series index and frame index
   around them (declared column names label a statistic and are not keys; a plain 0..n-1
   index is no key); a frame's column labels are keys only when all are values of given
   key columns (a cross table).  Each key position must hold values of one given
   public or internal string, integer or boolean column, else the output is held ("cannot
   check table cells").  A cell whose rows (or ids, with an id privacy unit) number from
   1 to ``min_count - 1`` is held, naming the cell; so is an unkeyed output of a dataset
   with fewer than ``min_count``.  DP values (``dp_values``) are exempt: DP protects them.
e. **DP.**  With ``dp_required`` every number and boolean must be one of ``dp_values``,
   compared exactly, and no string may be a number written as text (unless it is a value
   of a given key column): blocked otherwise.

What this does not catch: values of integer columns, encodings other than the above (a
choice between two DP values made on a confidential value, a string spelling a number
in words), differencing across releases, and dominance within a cell.  Code review and the
sandbox stand before these checks.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import polars as pl

from analytics.schema import ColumnClass, ColumnType, DatasetSchema
from analytics.sdc import SdcRules

MAX_DEPTH: Final = 3
MAX_STRING: Final = 256
MAX_REASONS: Final = 20
_NOT_SMALL: Final = "not a number or small table"
_KEY_TYPES: Final = (ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN)
_MAX_COMBINATIONS: Final = 16
_UNIT: Final = "#unit"

Status = Literal["pass", "held", "blocked"]
Scalar = bool | int | float | str | None
Key = tuple[Scalar, ...]


@dataclass(frozen=True)
class OutputCheck:
    """The verdict on one output, why, and the output as JSON-able data (None if blocked)."""

    status: Status
    reasons: tuple[str, ...]
    value: object


class _Refused(Exception):
    """The output cannot be released at all; the message is the reason."""


@dataclass(frozen=True)
class _Leaf:
    value: Scalar
    path: Key  # keys of the enclosing keyed containers, outermost first


def check_output(
    value: object,
    private: pl.DataFrame,
    schema: DatasetSchema,
    columns_given: Sequence[str],
    *,
    min_count: int,
    dp_values: Collection[float] = (),
    dp_required: bool = False,
    max_bytes: int = 64_000,
    max_cells: int = 1_000,
) -> OutputCheck:
    """Check ``value`` (a reviewed function's output) against ``private``; see the module."""
    SdcRules(min_count=min_count)  # the platform floor applies here too
    facts = _Facts(private, schema, columns_given)
    walk = _Walk(frozenset(schema.names), max_cells, facts.all_key_values())
    try:
        normal = walk.value(value, 0, ())
        size = len(json.dumps(normal, allow_nan=False).encode("utf-8"))
    except _Refused as refusal:
        return OutputCheck("blocked", (str(refusal),), None)
    if size > max_bytes:
        return OutputCheck("blocked", (f"more than {max_bytes} bytes as JSON",), None)
    dp = frozenset(float(v) for v in dp_values)
    blocked = [*_row_level(walk, private.height, max_cells), *facts.disclosive(walk, block=True)]
    if dp_required:
        blocked += _not_dp(walk, dp, facts)
    if blocked:
        return OutputCheck("blocked", _capped(blocked), None)
    held = [*facts.disclosive(walk, block=False), *facts.small_cells(walk, dp, min_count)]
    if held:
        return OutputCheck("held", _capped(held), normal)
    return OutputCheck("pass", (), normal)


def _capped(reasons: list[str]) -> tuple[str, ...]:
    unique = list(dict.fromkeys(reasons))
    if len(unique) > MAX_REASONS:
        rest = len(unique) - MAX_REASONS
        return (*unique[:MAX_REASONS], f"and {rest} more")
    return tuple(unique)


# ---------------------------------------------------------------- a. and b.: type and size


class _Walk:
    """Normalises an output to JSON-able data, collecting its cells, keys and lengths."""

    def __init__(self, labels: frozenset[str], max_cells: int, key_values: frozenset[str]) -> None:
        self.labels = labels  # declared column names: they label statistics, not groups
        self.max_cells = max_cells
        self.key_values = key_values  # values of the given key columns, as key texts
        self.leaves: list[_Leaf] = []
        self.keys: list[Scalar] = []
        self.lengths: list[int] = []

    def value(self, value: object, depth: int, path: Key) -> object:
        if isinstance(value, pd.DataFrame):
            return self._frame(value, depth + 2, path)
        if isinstance(value, pd.Series):
            return self._series(value, depth + 1, path)
        if isinstance(value, np.ndarray):
            return self._array(value, depth, path)
        if isinstance(value, dict):
            return self._dict(value, depth + 1, path)
        if isinstance(value, list | tuple):
            self._enter(len(value), depth + 1)
            return [self.value(item, depth + 1, path) for item in value]
        return self._leaf(_scalar(value), path)

    def _enter(self, length: int, depth: int, cells: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise _Refused(f"{_NOT_SMALL}: nested more than {MAX_DEPTH} deep")
        if len(self.leaves) + max(length, cells) > self.max_cells:
            raise _Refused(f"more than {self.max_cells} values")
        self.lengths.append(length)

    def _leaf(self, value: Scalar, path: Key) -> Scalar:
        if len(self.leaves) >= self.max_cells:
            raise _Refused(f"more than {self.max_cells} values")
        self.leaves.append(_Leaf(value, path))
        return value

    def _key(self, key: object) -> Key:
        parts = key if isinstance(key, tuple) else (key,)
        normal = tuple(_scalar(part) for part in parts)
        self.keys.extend(normal)
        return normal

    def _within(self, path: Key, key: Key) -> Key:
        """``path`` extended by ``key``, unless ``key`` is a column name (a label)."""
        if len(key) == 1 and isinstance(key[0], str) and key[0] in self.labels:
            return path
        return path + key

    def _dict(self, value: dict[object, object], depth: int, path: Key) -> object:
        self._enter(len(value), depth)
        keys = [self._key(k) for k in value]
        pairs = zip(keys, value.values(), strict=True)
        items = [self.value(v, depth, self._within(path, k)) for k, v in pairs]
        names = [_json_key(k) for k in keys]
        if all(len(k) == 1 for k in keys) and len(set(names)) == len(names):
            return dict(zip(names, items, strict=True))
        return {"index": [_json_index(k) for k in keys], "values": items}

    def _series(self, series: pd.Series, depth: int, path: Key) -> object:
        self._enter(len(series), depth)
        keys = [self._key(k) for k in series.index]
        plain = _plain(series.index)
        strings = _object_dtype(series.dtype)
        values = [
            self._leaf(_cell(v, strings), path if plain else self._within(path, k))
            for k, v in zip(keys, series.tolist(), strict=True)
        ]
        return {"index": [_json_index(k) for k in keys], "values": values}

    def _frame(self, frame: pd.DataFrame, depth: int, path: Key) -> object:
        self._enter(len(frame), depth, cells=frame.size)
        columns = [self._key(c) for c in frame.columns]
        index = [self._key(k) for k in frame.index]
        plain = _plain(frame.index)
        # Column labels name statistics, unless all are values of key columns (a cross table).
        crossed = not _plain(frame.columns) and all(
            len(c) == 1 and _key_text(c[0]) in self.key_values for c in columns
        )
        strings = [_object_dtype(t) for t in frame.dtypes]
        rows = []
        for key, row in zip(index, frame.itertuples(index=False, name=None), strict=True):
            here = path if plain else self._within(path, key)
            rows.append(
                [
                    self._leaf(_cell(v, text), self._within(here, column) if crossed else here)
                    for v, text, column in zip(row, strings, columns, strict=True)
                ]
            )
        return {
            "columns": [_json_index(c) for c in columns],
            "index": [_json_index(k) for k in index],
            "rows": rows,
        }

    def _array(self, array: npt.NDArray[Any], depth: int, path: Key) -> object:
        if array.ndim == 0:
            return self._leaf(_scalar(array.item()), path)
        if array.ndim > 2 or array.dtype.kind not in "biufUO":
            raise _Refused(f"{_NOT_SMALL}: arrays may have 1 or 2 dimensions of numbers or text")
        self._enter(len(array), depth + array.ndim, cells=array.size)
        strings = array.dtype.kind == "O"
        if array.ndim == 1:
            return [self._leaf(_cell(v, strings), path) for v in array.tolist()]
        return [[self._leaf(_cell(v, strings), path) for v in row] for row in array.tolist()]


def _scalar(value: object) -> Scalar:
    """A scalar as JSON: NaN and infinities become None; anything else is refused."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _Refused(f"{_NOT_SMALL}: a string longer than {MAX_STRING} characters")
        return str(value)
    raise _Refused(_NOT_SMALL)


def _cell(value: object, strings_only: bool) -> Scalar:
    """A value of a pandas or numpy column; object columns may hold only strings."""
    if strings_only and not (isinstance(value, str) or _missing(value)):
        raise _Refused(f"{_NOT_SMALL}: object columns may hold only strings")
    return _scalar(value)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _object_dtype(dtype: object) -> bool:
    return getattr(dtype, "kind", "") == "O"


def _plain(index: pd.Index) -> bool:
    """A default 0..n-1 index, which keys nothing."""
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def _json_key(key: Key) -> str:
    part = key[0]
    if isinstance(part, str):
        return part
    return json.dumps(part)


def _json_index(key: Key) -> object:
    return key[0] if len(key) == 1 else list(key)


# ---------------------------------------------------------------- c. row-level


def _row_level(walk: _Walk, rows: int, max_cells: int) -> list[str]:
    limit = max(2, min(math.ceil(rows / 2), max_cells))
    if any(length >= limit for length in walk.lengths):
        return ["looks row-level: a list or table with as many entries as half the rows or more"]
    return []


def _scan(values: Iterable[Scalar]) -> tuple[list[float], list[str]]:
    """The non-integer numbers and the strings among ``values``."""
    numbers, strings = [], []
    for v in values:
        if isinstance(v, float) and not v.is_integer():
            numbers.append(v)
        elif isinstance(v, str):
            strings.append(v)
    return numbers, strings


class _Facts:
    """What the checks need to know of the private frame, computed when first asked."""

    def __init__(self, private: pl.DataFrame, schema: DatasetSchema, given: Sequence[str]) -> None:
        self.private, self.schema = private, schema
        self.given = [c for c in dict.fromkeys(given) if c in private.columns]
        self._key_values: dict[str, frozenset[str]] = {}

    def _class(self, name: str) -> ColumnClass:
        try:
            return self.schema.column(name).column_class
        except KeyError:
            return ColumnClass.SECRET  # undeclared: treated as the most sensitive

    def disclosive(self, walk: _Walk, *, block: bool) -> list[str]:
        """Values of confidential/secret (block) or internal (not block) columns in the output."""
        numbers, strings = _scan([*(leaf.value for leaf in walk.leaves), *walk.keys])
        reasons = []
        for name in self.private.columns:
            kind = self._class(name)
            if block != (kind in (ColumnClass.CONFIDENTIAL, ColumnClass.SECRET)):
                continue
            if kind is ColumnClass.PUBLIC:
                continue
            column = self.private[name]
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

    def key_columns(self) -> list[str]:
        """Given public or internal string, integer or boolean columns."""
        keys = []
        for name in self.given:
            try:
                spec = self.schema.column(name)
            except KeyError:
                continue
            public = spec.column_class in (ColumnClass.PUBLIC, ColumnClass.INTERNAL)
            if public and spec.type in _KEY_TYPES and name != self.schema.privacy_unit.id_column:
                keys.append(name)
        return keys

    def all_key_values(self) -> frozenset[str]:
        values: set[str] = set()
        for name in self.key_columns():
            values |= self.key_values(name)
        return frozenset(values)

    def key_values(self, name: str) -> frozenset[str]:
        if name not in self._key_values:
            values = self.private.select(_key_expr(name)).to_series().unique().to_list()
            self._key_values[name] = frozenset(str(v) for v in values)
        return self._key_values[name]

    def units(self, by: Sequence[str]) -> dict[tuple[str, ...], int]:
        """Rows (or ids, with an id privacy unit) per combination of ``by``'s key texts."""
        unit = self.schema.privacy_unit.id_column
        ids = pl.col(unit) if unit is not None and unit in self.private.columns else None
        keyed = self.private.select(
            *[_key_expr(c).alias(f"#k{i}") for i, c in enumerate(by)],
            (pl.int_range(pl.len()) if ids is None else ids).alias(_UNIT),
        )
        names = [f"#k{i}" for i in range(len(by))]
        counted = keyed.group_by(names).agg(pl.col(_UNIT).n_unique().alias("#n"))
        return {tuple(row[:-1]): int(row[-1]) for row in counted.iter_rows()}

    def small_cells(self, walk: _Walk, dp: frozenset[float], min_count: int) -> list[str]:
        """d: cells of fewer than ``min_count`` units (DP values exempt)."""
        paths = {
            leaf.path
            for leaf in walk.leaves
            if isinstance(leaf.value, int | float) and leaf.value not in dp
        }
        word = "rows" if self.schema.privacy_unit.id_column is None else "individuals"
        reasons = []
        if () in paths and 0 < self._total() < min_count:
            reasons.append(f"the whole dataset has fewer than {min_count} {word}")
        by_length: dict[int, list[Key]] = {}
        for path in paths - {()}:
            by_length.setdefault(len(path), []).append(path)
        for cells in by_length.values():
            reasons += self._check_table(cells, min_count, word)
        return reasons

    def _total(self) -> int:
        unit = self.schema.privacy_unit.id_column
        if unit is not None and unit in self.private.columns:
            return self.private[unit].n_unique()
        return self.private.height

    def _check_table(self, cells: list[Key], min_count: int, word: str) -> list[str]:
        texts = [tuple(_key_text(part) for part in cell) for cell in cells]
        candidates = []
        for position in range(len(texts[0])):
            wanted = {t[position] for t in texts}
            matching = [c for c in self.key_columns() if wanted <= self.key_values(c)]
            if not matching:
                return ["cannot check table cells: their keys are not values of a given key column"]
            candidates.append(matching)
        reasons = []
        combinations = itertools.islice(itertools.product(*candidates), _MAX_COMBINATIONS)
        for by in combinations:
            counts = self.units(by)
            for text in texts:
                if 0 < counts.get(text, 0) < min_count:
                    where = ", ".join(f"{c}={v}" for c, v in zip(by, text, strict=True))
                    reasons.append(f"cell {where}: fewer than {min_count} {word}")
        return reasons


def _key_expr(name: str) -> pl.Expr:
    """A column's values as key texts (as tier 2 writes keys): null as ""."""
    return pl.col(name).cast(pl.String).fill_null("")


def _key_text(part: Scalar) -> str:
    if isinstance(part, bool):
        return "true" if part else "false"
    if isinstance(part, float) and part.is_integer():
        return str(int(part))
    if part is None:
        return ""
    return str(part)


# ---------------------------------------------------------------- e. DP


def _not_dp(walk: _Walk, dp: frozenset[float], facts: _Facts) -> list[str]:
    numbers = [leaf.value for leaf in walk.leaves if isinstance(leaf.value, bool | int | float)]
    other = [v for v in numbers if isinstance(v, bool) or v not in dp]
    reasons = []
    if other:
        reasons.append(
            f"confidential columns need DP output: use veil_dp ({len(other)} numbers are not "
            "values it returned, unchanged)"
        )
    labels = facts.all_key_values()
    texts = [leaf.value for leaf in walk.leaves if isinstance(leaf.value, str)]
    texts += [k for k in walk.keys if isinstance(k, str)]
    if any(_numeric_text(t) and t not in labels for t in texts):
        reasons.append("confidential columns need DP output: numbers written as text are refused")
    return reasons


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
