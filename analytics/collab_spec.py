"""A benchmark collaboration's statistics: the document, its strict parser, its spec.

A benchmark runs over many enterprises (``analytics.collab_stats`` does the math); its
proposal names the statistics to release, as JSON::

    {"statistics": [{"kind": "count"},
                    {"kind": "sum", "column": "energy_kwh", "lower": 0, "upper": 1e6},
                    {"kind": "mean", "column": "scrap_rate", "lower": 0, "upper": 1},
                    {"kind": "quantile", "column": "oee", "lower": 0, "upper": 1,
                     "q": [0.25, 0.5, 0.75], "bins": 20}],
     "by": "industry", "categories": ["汽车零部件", "电子"],
     "epsilon": 1.0, "delta": 1e-6, "min_participants": 5}

* ``count``: the number of participating enterprises per cell.
* ``sum`` / ``mean``: each enterprise's value is the sum / mean of ``column`` over its own
  rows (nulls ignored), clamped to ``[lower, upper]``, the bound on one enterprise's
  contribution; the release is the sum / mean of the enterprises' values.
* ``quantile``: the levels ``q`` (one number or a list) of the distribution of the
  enterprises' means of ``column``, from a histogram of ``bins`` (default 20) equal-width
  bins over ``[lower, upper]``.
* ``by``: ``industry``, ``district``, ``size_band`` or null (one cell, ``(all)``).  With
  ``by``, ``categories`` lists the public categories; an enterprise whose category is not
  listed is counted in the ``(other)`` cell (never refused: every node of the round must
  send a vector, and its absence would show).
* ``epsilon`` (required, 0.01 to 10) and ``delta`` (default 1e-6, above 0 and at most
  1e-5, below one over the most enterprises a benchmark takes): enterprise-level
  differential privacy of the whole release.
* ``min_participants`` (default 5, at least 3): cells whose noisy count is lower are
  suppressed.

Errors (``BenchmarkError``, a ``QueryError``) name the JSON path and what was expected;
they never repeat a submitted value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from analytics.column_names import column_name_problem, normalise
from analytics.dp_catalog import MAX_BINS, MIN_BINS, QueryError
from i18n import Msg

MAX_STATISTICS: Final = 8
MAX_CATEGORIES: Final = 100
MAX_QUANTILES: Final = 9
MAX_CATEGORY_LENGTH: Final = 64
DEFAULT_BINS: Final = 20
DEFAULT_DELTA: Final = 1e-6
DEFAULT_MIN_PARTICIPANTS: Final = 5
#: Fewer would let two enterprises that know their own values learn the third's.
MIN_PARTICIPANTS_FLOOR: Final = 3
EPSILON_RANGE: Final = (0.01, 10.0)
MAX_DELTA: Final = 1e-5
#: Bounds beyond this (or closer together than MIN_WIDTH) would strain the fixed point.
MAX_BOUND: Final = 1e15
MIN_WIDTH: Final = 1e-9
#: The public attributes a benchmark may group enterprises by.
BY: Final = ("industry", "district", "size_band")
#: The cell of enterprises whose category is not listed, and the one cell without ``by``.
OTHER: Final = "(other)"
ALL: Final = "(all)"


class BenchmarkError(QueryError):
    """A benchmark document or input this module cannot use; names the path, never a value."""


class Kind(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    QUANTILE = "quantile"


_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "count": (frozenset({"kind"}), frozenset({"kind"})),
    "sum": (frozenset({"kind", "column", "lower", "upper"}),) * 2,
    "mean": (frozenset({"kind", "column", "lower", "upper"}),) * 2,
    "quantile": (
        frozenset({"kind", "column", "lower", "upper", "q", "bins"}),
        frozenset({"kind", "column", "lower", "upper", "q"}),
    ),
}
_TOP: Final = frozenset({"statistics", "by", "categories", "epsilon", "delta", "min_participants"})


@dataclass(frozen=True)
class Statistic:
    """One statistic: its kind, column and contribution bounds (none for a count)."""

    kind: Kind
    column: str | None = None
    lower: float = 0.0
    upper: float = 0.0
    q: tuple[float, ...] = ()
    bins: int = 0

    @property
    def label(self) -> str:
        """``count``, ``sum(column)``, ``mean(column)`` or ``quantile(column)``."""
        return str(self.kind) if self.column is None else f"{self.kind}({self.column})"


@dataclass(frozen=True)
class BenchmarkSpec:
    """A parsed benchmark: what to release, per which cells, within which budget."""

    statistics: tuple[Statistic, ...]
    by: str | None
    categories: tuple[str, ...]
    epsilon: float
    delta: float
    min_participants: int = DEFAULT_MIN_PARTICIPANTS

    @property
    def cells(self) -> tuple[str, ...]:
        """The cells in release order: the listed categories then ``(other)``, or ``(all)``."""
        return (*self.categories, OTHER) if self.by is not None else (ALL,)

    def cell_of(self, category: str | None) -> int:
        """The index of the cell an enterprise of ``category`` belongs to."""
        if self.by is None:
            return 0
        if category in self.categories:
            return self.categories.index(category)
        return len(self.categories)


# ---------------------------------------------------------------- parsing


def parse_benchmark(doc: Any) -> BenchmarkSpec:
    """The BenchmarkSpec of a benchmark document; BenchmarkError naming the path otherwise."""
    if not isinstance(doc, dict):
        raise BenchmarkError(Msg("benchmark: expected a JSON object"))
    _only(doc, _TOP, "benchmark")
    if "statistics" not in doc:
        raise BenchmarkError(Msg("statistics: required"))
    items = doc["statistics"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_STATISTICS:
        raise BenchmarkError(
            Msg("statistics: expected a list of 1 to {limit} statistics", limit=MAX_STATISTICS)
        )
    statistics = tuple(_statistic(item, f"statistics[{i}]") for i, item in enumerate(items))
    labels = [s.label for s in statistics]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise BenchmarkError(Msg("statistics[{i}]: the same statistic twice", i=i))
    by = doc.get("by")
    if by is not None and by not in BY:
        raise BenchmarkError(Msg("by: expected one of {names}, or null", names=", ".join(BY)))
    if "epsilon" not in doc:
        raise BenchmarkError(Msg("epsilon: required"))
    return BenchmarkSpec(
        statistics,
        by,
        _categories(doc, by),
        _number(doc["epsilon"], "epsilon", *EPSILON_RANGE),
        _delta(doc.get("delta", DEFAULT_DELTA)),
        _min_participants(doc.get("min_participants", DEFAULT_MIN_PARTICIPANTS)),
    )


def _only(doc: dict[Any, Any], allowed: frozenset[str], path: str) -> None:
    for key in doc:
        if key not in allowed:
            raise BenchmarkError(
                Msg(
                    "{path}: unknown field; expected only {expected}",
                    path=path,
                    expected=", ".join(sorted(allowed)),
                )
            )


def _statistic(item: Any, path: str) -> Statistic:
    if not isinstance(item, dict):
        raise BenchmarkError(Msg("{path}: expected an object", path=path))
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise BenchmarkError(
            Msg("{path}.kind: expected one of {kinds}", path=path, kinds=", ".join(_FIELDS))
        )
    allowed, required = _FIELDS[kind]
    _only(item, allowed, f"{path} ({kind})")
    missing = sorted(required - item.keys())
    if missing:
        raise BenchmarkError(
            Msg("{path}.{missing}: required for {kind}", path=path, missing=missing[0], kind=kind)
        )
    if kind == Kind.COUNT:
        return Statistic(Kind.COUNT)
    column = _column(item["column"], f"{path}.column")
    lower = _number(item["lower"], f"{path}.lower", -MAX_BOUND, MAX_BOUND)
    upper = _number(item["upper"], f"{path}.upper", -MAX_BOUND, MAX_BOUND)
    if not upper - lower >= MIN_WIDTH:
        raise BenchmarkError(Msg("{path}.upper: expected a number greater than lower", path=path))
    if kind != Kind.QUANTILE:
        return Statistic(Kind(kind), column, lower, upper)
    bins = _bins(item.get("bins", DEFAULT_BINS), f"{path}.bins")
    return Statistic(Kind.QUANTILE, column, lower, upper, _levels(item["q"], f"{path}.q"), bins)


def _column(value: Any, path: str) -> str:
    problem = column_name_problem(value)
    if problem is not None:
        raise BenchmarkError(Msg("{path}: expected {column_help}", path=path, column_help=problem))
    assert isinstance(value, str)
    return normalise(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, path: str, low: float, high: float) -> float:
    if not (_is_number(value) and math.isfinite(value) and low <= value <= high):
        raise BenchmarkError(
            Msg("{path}: expected a number from {low:g} to {high:g}", path=path, low=low, high=high)
        )
    return float(value)


def _levels(value: Any, path: str) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    ok = 1 <= len(values) <= MAX_QUANTILES and all(
        _is_number(v) and math.isfinite(v) and 0 < v < 1 for v in values
    )
    if not ok or len(set(values)) != len(values):
        raise BenchmarkError(
            Msg(
                "{path}: expected a number strictly between 0 and 1, or a list of 1 to "
                "{limit} different ones",
                path=path,
                limit=MAX_QUANTILES,
            )
        )
    return tuple(sorted(float(v) for v in values))


def _bins(value: Any, path: str) -> int:
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not MIN_BINS <= value <= MAX_BINS:
        raise BenchmarkError(
            Msg(
                "{path}: expected an integer from {min_bins} to {max_bins}",
                path=path,
                min_bins=MIN_BINS,
                max_bins=MAX_BINS,
            )
        )
    return int(value)


def _categories(doc: dict[str, Any], by: str | None) -> tuple[str, ...]:
    if by is None:
        if "categories" in doc:
            raise BenchmarkError(Msg("categories: only with by"))
        return ()
    values = doc.get("categories")
    ok = isinstance(values, list) and 1 <= len(values) <= MAX_CATEGORIES
    if not ok or not all(
        isinstance(v, str) and 1 <= len(v) <= MAX_CATEGORY_LENGTH and v not in (OTHER, ALL)
        for v in values  # type: ignore[union-attr]
    ):
        raise BenchmarkError(
            Msg(
                "categories: expected a list of 1 to {limit} category names of 1 to "
                "{length} characters (not {other})",
                limit=MAX_CATEGORIES,
                length=MAX_CATEGORY_LENGTH,
                other=OTHER,
            )
        )
    assert isinstance(values, list)
    if len(set(values)) != len(values):
        raise BenchmarkError(Msg("categories: a category listed twice"))
    return tuple(values)


def _delta(value: Any) -> float:
    if not (_is_number(value) and 0 < value <= MAX_DELTA):
        raise BenchmarkError(
            Msg("delta: expected a number above 0 and at most {limit:g}", limit=MAX_DELTA)
        )
    return float(value)


def _min_participants(value: Any) -> int:
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or not MIN_PARTICIPANTS_FLOOR <= value <= 1000:
        raise BenchmarkError(
            Msg(
                "min_participants: expected an integer from {floor} to 1000",
                floor=MIN_PARTICIPANTS_FLOOR,
            )
        )
    return int(value)
