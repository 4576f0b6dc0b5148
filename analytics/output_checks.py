"""Tier 5: the checks a reviewed function's output passes before it is released.

The output of a provider's function is an **allow-list**, and every number Veil releases
is **computed by Veil**, never copied from the provider's process.  The trusted parent
runs these checks with the private frame (the granted columns) at hand, and with the
same function's output on the mock data, computed in a sandbox that never held private
data (``mock``).  The verdict is "blocked" (never released), "held" (the enterprise may
release it by hand after looking) or "pass".  Rules, in docs/reviewed-code.md:

a. **Type.**  Numbers, booleans, strings of at most ``MAX_STRING`` characters, None,
   lists/tuples/dicts of those nested at most ``MAX_DEPTH`` deep, pandas Series and
   DataFrames (object columns of strings only), numpy arrays (at most 2-D) and scalars.
   Anything else is blocked.  NaN and infinities become None.
b. **Size.**  More than ``max_cells`` values, or more than ``max_bytes`` of JSON: blocked.
c. **Row-level.**  A list, dict, Series or frame with at least
   ``max(2, min(ceil(rows / 2), max_cells))`` entries: blocked.  A non-integer number
   equal to a value of a confidential or secret float column, or a string equal to a value
   of a confidential or secret string column: blocked.  The same for an internal float
   column: held.
d. **Text.**  A string (a value or a key) must be a column name, a declared category of a
   given column, a value of a given key column, or a string literal of the approved code
   (``labels``).  Anything else is free text: blocked when DP is required, else held.
e. **Numbers.**  Each number must be recognised, on its cell (its keys name the cell;
   a number outside keyed tables belongs to the whole dataset), as one of Veil's own
   values: a value the DP helpers returned (``dp_values``, compared exactly), or — when
   DP is not required — a statistic Veil recomputes on the private frame: the cell's count,
   or the sum or mean of a given numeric column, in a cell of at least ``min_count``
   units not dominated by one or two of them.  Otherwise: blocked when DP is required
   (confidential columns), else held.  Values equal after rounding to the decimals the
   number shows are recognised.
f. **Same as on the mock.**  The output's shape (its keys, strings and lengths), the DP
   calls made (statistic, column, epsilon, conditions, in order) and which statistic each
   number is must be the same as on the mock: otherwise the code did something on the
   private data that it did not do on the mock, which is a channel — held (blocked when
   DP is required).
g. **Released values are Veil's.**  A passing output is released with every number
   replaced by the value Veil computed for it: the DP value of its call, or the statistic
   recomputed on the private frame and — when the frame carries the units' record keys —
   perturbed by the cell-key method exactly as tier 2 releases the same cell
   (``analytics.cellkey``), so that exact aggregates cannot be differenced across jobs.
   So no digit of a released number comes from the provider's process, and the shape
   carries nothing the mock did not already show.

When every given column is public, only rules a to c apply: nothing in the output is private.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import polars as pl

from analytics.output_cells import FrameFacts, Key, KeyText, Scalar, Statistic, key_text, matches
from analytics.schema import DatasetSchema
from analytics.sdc import SdcRules
from i18n import Msg

MAX_DEPTH: Final = 3
MAX_STRING: Final = 256
MAX_REASONS: Final = 20
_NOT_SMALL: Final = Msg("not a number or small table")
_ARRAY_SHAPE: Final = Msg(
    "not a number or small table: arrays may have 1 or 2 dimensions of numbers or text"
)

Status = Literal["pass", "held", "blocked"]


@dataclass(frozen=True)
class OutputCheck:
    """The verdict on one output, why, and the output as JSON-able data (None if blocked).

    A passing output's numbers are Veil's own values (rule g); a held one is the output as
    the function returned it, for the enterprise to look at."""

    status: Status
    reasons: tuple[str, ...]
    value: object


@dataclass(frozen=True)
class Number:
    """One number of an output as recognised on one frame."""

    dp: int | None  # the index of the DP call whose value it is
    statistics: dict[str, Statistic]  # the statistics of its cell it equals


@dataclass(frozen=True)
class Inspection:
    """An output read on one frame: normal form, shape, numbers, and what the rules found."""

    value: object
    shape: str
    numbers: tuple[Number, ...]
    dp_calls: tuple[object, ...]
    blocked: tuple[str, ...]
    held: tuple[str, ...]
    private: bool  # some given column is not public
    source: object = field(repr=False, default=None)  # the output as returned
    labels: frozenset[str] = frozenset()


def record(inspection: Inspection) -> dict[str, Any]:
    """What a reference comparison needs of ``inspection`` (rule f), as JSON: its shape and,
    per number, its DP call's index and the names of the statistics it is.  Its DP calls
    are the caller's to keep (they are opaque here)."""
    numbers = [[n.dp, sorted(n.statistics)] for n in inspection.numbers]
    return {"shape": inspection.shape, "numbers": numbers}


def from_record(stored: dict[str, Any], dp_calls: Sequence[object]) -> Inspection:
    """The reference ``Inspection`` a ``record`` keeps (its DP calls given back)."""
    blank = Statistic(math.nan, math.nan)
    numbers = tuple(
        Number(dp if isinstance(dp, int) else None, dict.fromkeys(map(str, names), blank))
        for dp, names in stored["numbers"]
    )
    return Inspection(None, str(stored["shape"]), numbers, tuple(dp_calls), (), (), True)


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
    dp_values: Sequence[float] = (),
    dp_calls: Sequence[object] = (),
    dp_required: bool = False,
    labels: Collection[str] = (),
    mock: Inspection | None = None,
    max_bytes: int = 64_000,
    max_cells: int = 1_000,
) -> OutputCheck:
    """Check ``value`` against ``private`` and the same code's ``mock`` inspection (None:
    compared with itself, as for the reviewer's run on the mock); see the module."""
    inspection = inspect_output(
        value, private, schema, columns_given, min_count=min_count, dp_values=dp_values,
        dp_calls=dp_calls, dp_required=dp_required, labels=labels, max_bytes=max_bytes,
        max_cells=max_cells,
    )  # fmt: skip
    return verdict(inspection, mock or inspection, dp_required, max_cells)


def inspect_output(
    value: object,
    frame: pl.DataFrame,
    schema: DatasetSchema,
    columns_given: Sequence[str],
    *,
    min_count: int,
    dp_values: Sequence[float] = (),
    dp_calls: Sequence[object] = (),
    dp_required: bool = False,
    labels: Collection[str] = (),
    max_bytes: int = 64_000,
    max_cells: int = 1_000,
) -> Inspection:
    """Read ``value`` (a function's output) on ``frame`` (private data or mock): rules a to e."""
    SdcRules(min_count=min_count)  # the platform floor applies here too
    facts = FrameFacts(frame, schema, columns_given)
    key_values = facts.all_key_values()
    # Column names, and the code's own string literals that are no key column's value,
    # label statistics: they name no cell.
    names = frozenset(schema.names) | (frozenset(labels) - key_values)
    walk = _Walk(names, max_cells, key_values)
    calls = tuple(dp_calls)
    try:
        normal = walk.value(value, 0, ())
        size = len(json.dumps(normal, allow_nan=False).encode("utf-8"))
        if size > max_bytes:
            raise _Refused(Msg("more than {max_bytes} bytes as JSON", max_bytes=max_bytes))
    except _Refused as refusal:
        return Inspection(None, "", (), calls, (str(refusal),), (), not facts.all_public())
    dp = [float(v) for v in dp_values]
    numbers, held = _recognise(walk, facts, dp, min_count)
    private = not facts.all_public()
    numeric, strings = _scan([*(leaf.value for leaf in walk.leaves), *walk.keys])
    free = _free_text(walk, facts.text_allowed(labels))
    blocked = [*_row_level(walk, frame.height, max_cells)]
    blocked += facts.disclosive(numeric, strings, block=True)
    if dp_required:
        blocked += _not_dp(walk, numbers, facts)
        blocked += free
    holding = [*facts.disclosive(numeric, strings, block=False), *held]
    if private and not dp_required:
        holding += free + _unrecognised(numbers)
    return Inspection(
        normal, _shape(value, walk), tuple(numbers), calls, tuple(blocked), tuple(holding),
        private, value, frozenset(labels),
    )  # fmt: skip


def verdict(
    private: Inspection, mock: Inspection, dp_required: bool, max_cells: int = 1_000
) -> OutputCheck:
    """The verdict on ``private``, compared with ``mock`` (rules f and g)."""
    if private.blocked:
        return OutputCheck("blocked", _capped(list(private.blocked)), None)
    different = _differences(private, mock) if private.private else []
    if different and dp_required:
        return OutputCheck("blocked", _capped(different), None)
    held = [*private.held, *different]
    if held:
        return OutputCheck("held", _capped(held), private.value)
    if not private.private:
        return OutputCheck("pass", (), private.value)
    values = iter([_veils_value(number) for number in private.numbers])
    walk = _Walk(frozenset(), max_cells, frozenset(), replace=values)
    return OutputCheck("pass", (), walk.value(private.source, 0, ()))


def _veils_value(number: Number) -> Scalar:
    """What Veil releases for a recognised number: its DP value or its statistic."""
    if number.dp is not None:
        return None  # replaced below by the value itself (it is Veil's: see _Walk)
    name = sorted(number.statistics)[0]
    return number.statistics[name].released


def _differences(private: Inspection, mock: Inspection) -> list[str]:
    reasons: list[str] = []
    if private.shape != mock.shape:
        reasons.append(
            Msg(
                "the output's shape (its keys, labels and lengths) differs from its shape on "
                "the mock data: it depends on the private data"
            )
        )
    if private.dp_calls != mock.dp_calls:
        reasons.append(
            Msg(
                "the DP helper calls differ from those made on the mock data: which "
                "statistics are computed depends on the private data"
            )
        )
    if reasons:
        return reasons
    moved = 0
    if len(private.numbers) != len(mock.numbers):  # a number here, a NaN there
        return [Msg("the output's numbers are not in the same places as on the mock data")]
    for ours, theirs in zip(private.numbers, mock.numbers, strict=True):
        if ours.dp is not None:
            moved += ours.dp != theirs.dp
        elif ours.statistics:
            moved += not set(ours.statistics) & set(theirs.statistics)
    if moved:
        return [
            Msg(
                "{moved} numbers are not the same statistic as in the same place on the mock "
                "data: which statistic is released depends on the private data",
                moved=moved,
            )
        ]
    return []


def _capped(reasons: list[str]) -> tuple[str, ...]:
    unique = list(dict.fromkeys(reasons))
    if len(unique) > MAX_REASONS:
        rest = len(unique) - MAX_REASONS
        return (*unique[:MAX_REASONS], Msg("and {rest} more", rest=rest))
    return tuple(unique)


# ---------------------------------------------------------------- a. and b.: type and size


class _Walk:
    """Normalises an output to JSON-able data, collecting its cells, keys and lengths.

    With ``replace``, every number (not booleans' None) is replaced by the next value of
    ``replace`` — None there keeps the number (a DP value, already Veil's)."""

    def __init__(
        self,
        labels: frozenset[str],
        max_cells: int,
        key_values: frozenset[str],
        replace: Iterator[Scalar] | None = None,
    ) -> None:
        self.labels = labels  # they label statistics, not groups (column names, the code's)
        self.max_cells = max_cells
        self.key_values = key_values  # values of the given key columns, as key texts
        self.replace = replace
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
            raise _Refused(
                Msg("not a number or small table: nested more than {depth} deep", depth=MAX_DEPTH)
            )
        if len(self.leaves) + max(length, cells) > self.max_cells:
            raise _Refused(Msg("more than {max_cells} values", max_cells=self.max_cells))
        self.lengths.append(length)

    def _leaf(self, value: Scalar, path: Key) -> Scalar:
        if len(self.leaves) >= self.max_cells:
            raise _Refused(Msg("more than {max_cells} values", max_cells=self.max_cells))
        self.leaves.append(_Leaf(value, path))
        if self.replace is not None and _is_number(value):
            replacement = next(self.replace)
            return value if replacement is None else replacement
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
            len(c) == 1 and key_text(c[0]) in self.key_values for c in columns
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
            raise _Refused(_ARRAY_SHAPE)
        self._enter(len(array), depth + array.ndim, cells=array.size)
        strings = array.dtype.kind == "O"
        if array.ndim == 1:
            return [self._leaf(_cell(v, strings), path) for v in array.tolist()]
        return [[self._leaf(_cell(v, strings), path) for v in row] for row in array.tolist()]


def _is_number(value: Scalar) -> bool:
    return isinstance(value, bool | int | float)


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
            raise _Refused(
                Msg(
                    "not a number or small table: a string longer than {limit} characters",
                    limit=MAX_STRING,
                )
            )
        return str(value)
    raise _Refused(_NOT_SMALL)


def _cell(value: object, strings_only: bool) -> Scalar:
    """A value of a pandas or numpy column; object columns may hold only strings."""
    if strings_only and not (isinstance(value, str) or _missing(value)):
        raise _Refused(Msg("not a number or small table: object columns may hold only strings"))
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


def _shape(value: object, walk: _Walk) -> str:
    """The output as JSON with every number and boolean replaced by a marker."""
    blank = _Walk(walk.labels, walk.max_cells, walk.key_values, replace=itertools.repeat(_NUMBER))
    return json.dumps(blank.value(value, 0, ()))


#: What stands for a number in an output's shape.
_NUMBER: Final = "#number"


# ---------------------------------------------------------------- c. row-level, d. text


def _row_level(walk: _Walk, rows: int, max_cells: int) -> list[str]:
    limit = max(2, min(math.ceil(rows / 2), max_cells))
    if any(length >= limit for length in walk.lengths):
        return [
            Msg("looks row-level: a list or table with as many entries as half the rows or more")
        ]
    return []


def _scan(values: list[Scalar]) -> tuple[list[float], list[str]]:
    """The non-integer numbers and the strings among ``values``."""
    numbers, strings = [], []
    for v in values:
        if isinstance(v, float) and not v.is_integer():
            numbers.append(v)
        elif isinstance(v, str):
            strings.append(v)
    return numbers, strings


def _free_text(walk: _Walk, allowed: frozenset[str]) -> list[str]:
    texts = [leaf.value for leaf in walk.leaves if isinstance(leaf.value, str)]
    texts += [k for k in walk.keys if isinstance(k, str)]
    free = {t for t in texts if t not in allowed}
    if not free:
        return []
    return [
        Msg(
            "free text: {count} strings are neither column names, declared categories, "
            "values of a given key column nor string literals of the approved code",
            count=len(free),
        )
    ]


# ---------------------------------------------------------------- e. numbers


def _recognise(
    walk: _Walk, facts: FrameFacts, dp: list[float], min_count: int
) -> tuple[list[Number], list[str]]:
    """Each number's DP call or cell statistics, and why cells are held (small, unknown)."""
    leaves = [leaf for leaf in walk.leaves if _is_number(leaf.value)]
    index = {value: i for i, value in reversed(list(enumerate(dp)))}
    tables: dict[int, list[KeyText]] = {}
    for leaf in leaves:
        tables.setdefault(len(leaf.path), []).append(tuple(key_text(p) for p in leaf.path))
    by_length = {n: facts.columns_of(cells) if n else [()] for n, cells in tables.items()}
    word = "rows" if facts.unit_column is None else "individuals"
    held: list[str] = []
    numbers = []
    for leaf in leaves:
        value = leaf.value
        if not isinstance(value, bool) and value in index:
            numbers.append(Number(index[value], {}))  # type: ignore[index]
            continue
        combos = by_length[len(leaf.path)]
        if not combos:
            held.append(
                Msg("cannot check table cells: their keys are not values of a given key column")
            )
            numbers.append(Number(None, {}))
            continue
        cell = tuple(key_text(p) for p in leaf.path)
        held += _small(facts, combos, cell, min_count, word)
        numbers.append(_statistics_of(value, facts, combos[0], cell))  # type: ignore[arg-type]
    return numbers, held


def _small(
    facts: FrameFacts,
    combos: list[tuple[str, ...]],
    cell: KeyText,
    min_count: int,
    word: str,
) -> list[str]:
    rows = word == "rows"
    if not cell:
        total = facts.total_units()
        if not 0 < total < min_count:
            return []
        whole = (
            Msg("the whole dataset has fewer than {min_count} rows")
            if rows
            else Msg("the whole dataset has fewer than {min_count} individuals")
        )
        return [Msg(whole.template, min_count=min_count)]
    reasons: list[str] = []
    small = (
        Msg("cell {where}: fewer than {min_count} rows")
        if rows
        else Msg("cell {where}: fewer than {min_count} individuals")
    )
    for by in combos:
        units = facts.units(by).get(cell, 0)
        if 0 < units < min_count:
            where = ", ".join(f"{c}={v}" for c, v in zip(by, cell, strict=True))
            reasons.append(Msg(small.template, where=where, min_count=min_count))
    return reasons


def _statistics_of(value: float, facts: FrameFacts, by: tuple[str, ...], cell: KeyText) -> Number:
    statistics = facts.statistics(by).get(cell)
    if statistics is None or isinstance(value, bool):
        return Number(None, {})
    found = {name: stat for name, stat in statistics.items() if matches(value, stat.exact)}
    return Number(None, found)


def _unrecognised(numbers: list[Number]) -> list[str]:
    count = sum(1 for n in numbers if n.dp is None and not n.statistics)
    if not count:
        return []
    return [
        Msg(
            "{count} numbers are not values Veil can recompute (a DP helper's value, or a "
            "cell's count, or the sum or mean of a given column over a cell not dominated by "
            "one or two units): held for the enterprise's review",
            count=count,
        )
    ]


def _not_dp(walk: _Walk, numbers: list[Number], facts: FrameFacts) -> list[str]:
    reasons: list[str] = []
    other = sum(1 for n in numbers if n.dp is None)
    if other:
        reasons.append(
            Msg(
                "confidential columns need DP output: use veil_dp ({other} numbers are not "
                "values it returned, unchanged)",
                other=other,
            )
        )
    labels = facts.all_key_values()
    keys = [k for k in walk.keys if _is_number(k) and key_text(k) not in labels]
    texts = [leaf.value for leaf in walk.leaves if isinstance(leaf.value, str)]
    texts += [k for k in walk.keys if isinstance(k, str)]
    if keys or any(_numeric_text(t) and t not in labels for t in texts):
        reasons.append(
            Msg("confidential columns need DP output: numbers written as text or keys are refused")
        )
    return reasons


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
