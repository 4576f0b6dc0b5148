"""The catalog of private aggregates: what a schema allows, and how each becomes OpenDP.

``validate_query`` holds every schema-aware rule; the rest turns a valid query into
OpenDP Polars expressions, key frames and labels.  No noise is drawn here: every noisy
value comes from an OpenDP measurement built by ``analytics.private_query``.

Rules
-----
* Columns must be declared and never secret.  Confidential columns may feed aggregates
  but never be group keys (a key is released verbatim).
* count: rows, or non-null values of a column.  sum, mean, quantile, median: a numeric
  column with finite declared bounds, lower below upper.  quantile needs ``q`` in (0, 1).
* histogram: a bounded numeric column with ``bins`` in [2, 100] equal-width bins over the
  declared bounds, or a string column with declared categories (no ``bins``).
* group_by: up to ``MAX_GROUP_COLUMNS`` string, integer or boolean columns.  When all are
  public strings with declared categories, the keys are the cartesian product of those
  categories (public keys, at most ``MAX_KEYS`` including histogram bins); otherwise the
  keys are chosen by OpenDP's DP key selection, which needs delta > 0.
* where: up to ``MAX_FILTERS`` filters on declared, non-secret columns (confidential ones
  too: a filter runs inside the DP measurement, so only noisy statistics of the rows that
  pass are released).  Numeric columns compare with numbers (``= != < <= > >= in``);
  string and boolean columns with values of their type (``= != in``); a string column
  with declared categories only with those categories.  Rows whose value is null (or
  NaN) pass no filter on that column, as in SQL.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Final

import polars as pl
from opendp.extras.polars import dp_len

from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    Filter,
    FilterOp,
    FilterScalar,
    PrivateQuery,
)
from i18n import Msg

MAX_AGGREGATES: Final = 8
MAX_GROUP_COLUMNS: Final = 4
MAX_KEYS: Final = 10_000
MIN_BINS: Final = 2
MAX_BINS: Final = 100
#: Filters in a query's ``where``, values in one ``in`` list, characters in a text value.
MAX_FILTERS: Final = 16
MAX_IN_VALUES: Final = 100
MAX_FILTER_TEXT: Final = 200
#: 101 candidates = 100 equal steps over the declared bounds, both bounds included.
QUANTILE_CANDIDATES: Final = 101
#: Alias of the row count that OpenDP thresholds when it selects private keys.
KEYS_ALIAS: Final = "__veil_keys"
_KEY_TYPES: Final = frozenset({ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN})


class QueryError(ValueError):
    """A query that this schema cannot answer; the message names the column, never a value."""


# ---------------------------------------------------------------- validation


def validate_query(schema: DatasetSchema, query: PrivateQuery) -> None:
    """Raise QueryError unless ``query`` can be answered privately from ``schema``."""
    if not query.aggregates:
        raise QueryError(Msg("a private query needs at least one aggregate"))
    if len(query.aggregates) > MAX_AGGREGATES:
        raise QueryError(
            Msg(
                "a private query has at most {max_aggregates} aggregates",
                max_aggregates=MAX_AGGREGATES,
            )
        )
    for aggregate in query.aggregates:
        _check_aggregate(schema, aggregate)
    _check_group_by(schema, query)
    _check_where(schema, query)
    unit = schema.privacy_unit
    if unit.id_column is not None and unit.id_column not in schema.names:
        raise QueryError(
            Msg(
                "column {id_column} (privacy unit id) is not declared",
                id_column=repr(unit.id_column),
            )
        )
    if unit.id_column is not None and unit.max_rows_per_id < 1:
        raise QueryError(
            Msg(
                "column {id_column} (privacy unit id): max_rows_per_id < 1",
                id_column=repr(unit.id_column),
            )
        )


def _usable(schema: DatasetSchema, name: str, role: str) -> ColumnSpec:
    try:
        spec = schema.column(name)
    except KeyError:
        raise QueryError(
            Msg(
                "column {name} ({role}) is not declared in the dataset",
                name=repr(name),
                role=role,
            )
        ) from None
    if spec.column_class == ColumnClass.SECRET:
        raise QueryError(
            Msg(
                "column {name} ({role}) is secret and cannot be queried",
                name=repr(name),
                role=role,
            )
        )
    return spec


def _check_extras(aggregate: Aggregate) -> None:
    kind = aggregate.kind
    if aggregate.q is not None and kind != AggregateKind.QUANTILE:
        raise QueryError(
            Msg(
                "{kind}: only a quantile takes q",
                kind=kind,
            )
        )
    if aggregate.bins is not None and kind != AggregateKind.HISTOGRAM:
        raise QueryError(
            Msg(
                "{kind}: only a histogram takes bins",
                kind=kind,
            )
        )
    if kind == AggregateKind.QUANTILE:
        q = aggregate.q
        if not (isinstance(q, int | float) and not isinstance(q, bool) and 0 < q < 1):
            raise QueryError(
                Msg(
                    "quantile({column}) needs q strictly between 0 and 1",
                    column=aggregate.column,
                )
            )


def _check_aggregate(schema: DatasetSchema, aggregate: Aggregate) -> None:
    kind = aggregate.kind
    _check_extras(aggregate)
    if kind == AggregateKind.COUNT:
        if aggregate.column is not None:
            _usable(schema, aggregate.column, "count")
        return
    if aggregate.column is None:
        raise QueryError(
            Msg(
                "{kind} needs a column",
                kind=kind,
            )
        )
    spec = _usable(schema, aggregate.column, str(kind))
    if kind == AggregateKind.HISTOGRAM:
        _check_histogram(spec, aggregate.bins)
    elif not spec.is_numeric:
        raise QueryError(
            Msg(
                "column {name}: {kind} needs an integer or float column, not {type}",
                name=repr(spec.name),
                kind=kind,
                type=spec.type,
            )
        )
    else:
        _check_bounds(spec, str(kind))


def _check_bounds(spec: ColumnSpec, kind: str) -> None:
    lower, upper = spec.lower, spec.upper
    if lower is None or upper is None or not (math.isfinite(lower) and math.isfinite(upper)):
        raise QueryError(
            Msg(
                "column {name}: {kind} needs declared finite lower/upper bounds",
                name=repr(spec.name),
                kind=kind,
            )
        )
    if not lower < upper:
        raise QueryError(
            Msg(
                "column {name}: {kind} needs a declared lower below upper",
                name=repr(spec.name),
                kind=kind,
            )
        )


def _check_histogram(spec: ColumnSpec, bins: int | None) -> None:
    if spec.is_numeric:
        _check_bounds(spec, "histogram")
        if not (isinstance(bins, int) and not isinstance(bins, bool)):
            raise QueryError(
                Msg(
                    "column {name}: histogram needs bins, an integer",
                    name=repr(spec.name),
                )
            )
        if not MIN_BINS <= bins <= MAX_BINS:
            raise QueryError(
                Msg(
                    "column {name}: histogram needs {min_bins} to {max_bins} bins",
                    name=repr(spec.name),
                    min_bins=MIN_BINS,
                    max_bins=MAX_BINS,
                )
            )
    elif spec.type == ColumnType.STRING and spec.categories:
        _check_categories(spec)
        if bins is not None:
            raise QueryError(
                Msg(
                    "column {name}: a histogram of categories takes no bins",
                    name=repr(spec.name),
                )
            )
    else:
        raise QueryError(
            Msg(
                "column {name}: histogram needs a bounded numeric column or a "
                "string column with declared categories",
                name=repr(spec.name),
            )
        )


def _check_categories(spec: ColumnSpec) -> None:
    if len(set(spec.categories or ())) != len(spec.categories or ()):
        raise QueryError(
            Msg(
                "column {name}: its declared categories must be distinct",
                name=repr(spec.name),
            )
        )


def _check_group_by(schema: DatasetSchema, query: PrivateQuery) -> None:
    names = query.group_by
    if len(names) > MAX_GROUP_COLUMNS:
        raise QueryError(
            Msg(
                "group_by has at most {max_group_columns} columns",
                max_group_columns=MAX_GROUP_COLUMNS,
            )
        )
    if len(set(names)) != len(names):
        raise QueryError(Msg("group_by lists a column twice"))
    for name in names:
        spec = _usable(schema, name, "group_by")
        if spec.column_class == ColumnClass.CONFIDENTIAL:
            raise QueryError(
                Msg(
                    "column {name} (group_by) is confidential: it may feed DP "
                    "aggregates but its values can never be released as group keys",
                    name=repr(name),
                )
            )
        if spec.type not in _KEY_TYPES:
            raise QueryError(
                Msg(
                    "column {name}: group_by needs a string, integer or boolean column, not {type}",
                    name=repr(name),
                    type=spec.type,
                )
            )
        _check_categories(spec)
    if has_public_keys(schema, query):
        for aggregate in query.aggregates:
            cells = key_count(schema, query) * len(_bin_keys(schema, aggregate))
            if cells > MAX_KEYS:
                raise QueryError(
                    Msg(
                        "group_by: {label} would release {cells} values per statistic, "
                        "more than {max_keys}",
                        label=label(aggregate),
                        cells=cells,
                        max_keys=MAX_KEYS,
                    )
                )


def _check_where(schema: DatasetSchema, query: PrivateQuery) -> None:
    if len(query.where) > MAX_FILTERS:
        raise QueryError(Msg("where has at most {max_filters} filters", max_filters=MAX_FILTERS))
    for i, item in enumerate(query.where):
        spec = _usable(schema, item.column, "where")
        values = item.value if isinstance(item.value, tuple) else (item.value,)
        if item.op == FilterOp.IN and not values:
            raise QueryError(Msg("where[{i}]: in needs at least one value", i=i))
        if spec.is_numeric:
            fits = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            expected = Msg("numbers")
        elif spec.type == ColumnType.BOOLEAN:
            fits = all(isinstance(v, bool) for v in values)
            expected = Msg("true or false")
        else:
            fits = all(isinstance(v, str) for v in values)
            expected = Msg("texts")
        if not fits:
            raise QueryError(
                Msg(
                    "where[{i}]: column {name} is {type}; compare it with {expected}",
                    i=i,
                    name=repr(spec.name),
                    type=spec.type,
                    expected=expected,
                )
            )
        if not spec.is_numeric and item.op not in (FilterOp.EQ, FilterOp.NE, FilterOp.IN):
            raise QueryError(
                Msg(
                    "where[{i}]: column {name} is {type}: only =, != and in compare it",
                    i=i,
                    name=repr(spec.name),
                    type=spec.type,
                )
            )
        if spec.type == ColumnType.STRING and spec.categories:
            declared = set(spec.categories)
            if any(v not in declared for v in values):
                # The value is not repeated: say where it is and what to compare with.
                raise QueryError(
                    Msg(
                        "where[{i}]: a value is not a declared category of column {name}; "
                        "the catalog lists its categories",
                        i=i,
                        name=repr(spec.name),
                    )
                )


def has_public_keys(schema: DatasetSchema, query: PrivateQuery) -> bool:
    """True when every group key is a public string column with declared categories."""
    return all(_is_public_key(schema.column(name)) for name in query.group_by)


def needs_key_selection(schema: DatasetSchema, query: PrivateQuery) -> bool:
    """True when OpenDP must choose the released keys (costs delta > 0)."""
    return bool(query.group_by) and not has_public_keys(schema, query)


def _is_public_key(spec: ColumnSpec) -> bool:
    public = spec.column_class == ColumnClass.PUBLIC and spec.type == ColumnType.STRING
    return public and bool(spec.categories)


def key_count(schema: DatasetSchema, query: PrivateQuery) -> int:
    """The number of public keys: the product of the declared category counts."""
    return math.prod(len(schema.column(name).categories or ()) for name in query.group_by)


# ---------------------------------------------------------------- labels and grids


def label(aggregate: Aggregate) -> str:
    """How a statistic is named in a release: ``count``, ``mean(t)``, ``quantile(t, 0.9)``."""
    kind, column = str(aggregate.kind), aggregate.column
    if column is None:
        return kind
    if aggregate.kind == AggregateKind.QUANTILE:
        return f"quantile({column}, {float(aggregate.q or 0.0)!r})"
    return f"{kind}({column})"


def quantile_level(aggregate: Aggregate) -> float:
    """The level OpenDP selects: ``q`` for a quantile, 0.5 for a median."""
    return 0.5 if aggregate.kind == AggregateKind.MEDIAN else float(aggregate.q or 0.0)


def bounds(spec: ColumnSpec) -> tuple[float, float] | tuple[int, int]:
    """Declared bounds, in the column's type (integer sums need integer bounds)."""
    assert spec.lower is not None and spec.upper is not None  # checked by validate_query
    if spec.type == ColumnType.INTEGER:
        # The integer hull of the declared interval: holds every valid integer value.
        return math.floor(spec.lower), math.ceil(spec.upper)
    return float(spec.lower), float(spec.upper)


def quantile_candidates(spec: ColumnSpec) -> list[float] | list[int]:
    """``QUANTILE_CANDIDATES`` evenly spaced values over the declared bounds, ends included.

    An integer column gets integers: every integer of its bounds' hull when there are
    few enough, else the grid rounded to integers.
    """
    lower, upper = bounds(spec)
    steps = QUANTILE_CANDIDATES - 1
    if isinstance(lower, int) and isinstance(upper, int):
        if upper - lower <= steps:
            return list(range(lower, upper + 1))
        return sorted({lower + round((upper - lower) * i / steps) for i in range(steps + 1)})
    return [lower + (upper - lower) * i / steps for i in range(steps)] + [upper]


def _number(x: float) -> str:
    """A bin edge as a short label: integers without a decimal point."""
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


@dataclass(frozen=True)
class Bins:
    """A histogram's keys (values of its key column) and label suffixes, in order."""

    keys: tuple[str, ...]
    suffixes: tuple[str, ...]
    breaks: tuple[float, ...] | None  # interior edges of numeric bins


def histogram_bins(spec: ColumnSpec, bins: int | None) -> Bins:
    """Equal-width bins ``[a, b)`` over the declared bounds (the last one closed), or
    the declared categories of a string column."""
    if not spec.is_numeric:
        categories = tuple(spec.categories or ())
        return Bins(categories, tuple(f"={c}" for c in categories), None)
    assert spec.lower is not None and spec.upper is not None and bins is not None
    lower, upper = float(spec.lower), float(spec.upper)
    edges = [lower + (upper - lower) * i / bins for i in range(bins)] + [upper]
    suffixes = tuple(
        f"[{_number(edges[i])}, {_number(edges[i + 1])}{']' if i == bins - 1 else ')'}"
        for i in range(bins)
    )
    return Bins(suffixes, suffixes, tuple(edges[1:-1]))


def _bin_keys(schema: DatasetSchema, aggregate: Aggregate) -> tuple[str, ...]:
    if aggregate.kind != AggregateKind.HISTOGRAM or aggregate.column is None:
        return ("",)
    return histogram_bins(schema.column(aggregate.column), aggregate.bins).keys


# ---------------------------------------------------------------- OpenDP expressions


@dataclass(frozen=True)
class Part:
    """One noisy column of an OpenDP plan, under an alias of ours."""

    alias: str
    expr: pl.Expr


def alias(index: int) -> str:
    """The plan column of the ``index``-th aggregate (a mean adds ``_sum`` and ``_len``)."""
    return f"__veil_{index}"


def bin_column(index: int) -> str:
    """The key column holding the bin (or category) of the ``index``-th aggregate."""
    return f"__veil_bin_{index}"


def _dp(expr: pl.Expr) -> Any:
    # OpenDP registers the "dp" namespace on polars expressions at import; mypy can't see it.
    return expr.dp  # type: ignore[attr-defined]


def _clamped_sum(spec: ColumnSpec, name: str) -> Part:
    lower, upper = bounds(spec)
    fill = min(max(0, lower), upper)  # nulls and NaN count as 0 clamped into the bounds
    column = pl.col(spec.name)
    if spec.type == ColumnType.FLOAT:
        column = column.fill_nan(fill)
    return Part(name, _dp(column.fill_null(fill)).sum((lower, upper)).alias(name))


def _selection(spec: ColumnSpec, aggregate: Aggregate, name: str) -> Part:
    # Only valid values are ranked: is_not_nan is null (so filtered out) on nulls too.
    column = pl.col(spec.name)
    valid = column.is_not_nan() if spec.type == ColumnType.FLOAT else column.is_not_null()
    ranked = _dp(column.filter(valid))
    candidates = quantile_candidates(spec)
    if aggregate.kind == AggregateKind.MEDIAN:
        return Part(name, ranked.median(candidates).alias(name))
    return Part(name, ranked.quantile(quantile_level(aggregate), candidates).alias(name))


def parts(schema: DatasetSchema, index: int, aggregate: Aggregate) -> list[Part]:
    """The noisy columns of a non-histogram aggregate: a mean needs a sum and a row count."""
    name, column = alias(index), aggregate.column
    if aggregate.kind == AggregateKind.COUNT:
        if column is None:
            return [Part(name, dp_len(signed=True).alias(name))]
        return [Part(name, _dp(pl.col(column)).count(signed=True).alias(name))]
    assert column is not None  # checked by validate_query
    spec = schema.column(column)
    if aggregate.kind == AggregateKind.SUM:
        return [_clamped_sum(spec, name)]
    if aggregate.kind == AggregateKind.MEAN:
        rows = Part(f"{name}_len", dp_len(signed=True).alias(f"{name}_len"))
        return [_clamped_sum(spec, f"{name}_sum"), rows]
    return [_selection(spec, aggregate, name)]


def _comparison(column: pl.Expr, op: FilterOp, value: FilterScalar) -> pl.Expr:
    literal = pl.lit(value)
    if op == FilterOp.EQ:
        return column == literal
    if op == FilterOp.NE:
        return column != literal
    if op == FilterOp.LT:
        return column < literal
    if op == FilterOp.LE:
        return column <= literal
    if op == FilterOp.GT:
        return column > literal
    return column >= literal


def _filter_expr(spec: ColumnSpec, item: Filter) -> pl.Expr:
    column = pl.col(spec.name)
    if item.op == FilterOp.IN:
        # OpenDP 0.16 does not take is_in in a filter: a disjunction of equalities.
        assert isinstance(item.value, tuple)  # checked by parse_query
        terms = [column == pl.lit(v) for v in item.value]
        predicate = terms[0]
        for term in terms[1:]:
            predicate = predicate | term
    else:
        assert not isinstance(item.value, tuple)
        predicate = _comparison(column, item.op, item.value)
    if spec.type == ColumnType.FLOAT:
        # Polars orders NaN above every number; as in SQL, no comparison holds for it.
        predicate = column.is_not_nan() & predicate
    # A null comparison is null, and filter drops it: null passes no filter.
    return predicate


def where_expr(schema: DatasetSchema, query: PrivateQuery) -> pl.Expr | None:
    """The row predicate of the query's filters (all of them), None without filters."""
    predicate: pl.Expr | None = None
    for item in query.where:
        term = _filter_expr(schema.column(item.column), item)
        predicate = term if predicate is None else predicate & term
    return predicate


def bin_expr(schema: DatasetSchema, index: int, aggregate: Aggregate) -> pl.Expr:
    """The histogram key of each row: its bin label, or its category.

    ``cut`` with ``left_closed`` puts values below the lower bound in the first bin and
    values from the last interior edge upward (the upper bound included) in the last, so
    out-of-bounds values are clamped.  Nulls and NaN get a null key, which no key frame
    holds, so they are not counted.
    """
    assert aggregate.column is not None  # checked by validate_query
    spec = schema.column(aggregate.column)
    bins = histogram_bins(spec, aggregate.bins)
    column = pl.col(spec.name)
    if bins.breaks is None:
        return column.alias(bin_column(index))
    cut = column.cut(list(bins.breaks), labels=list(bins.keys), left_closed=True)
    return cut.cast(pl.String).alias(bin_column(index))


def public_keys(schema: DatasetSchema, query: PrivateQuery) -> pl.DataFrame:
    """The cartesian product of the declared categories, in declared order."""
    names = query.group_by
    rows = list(itertools.product(*(schema.column(n).categories or () for n in names)))
    return pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String), orient="row")


def with_bins(
    keys: pl.DataFrame | None, schema: DatasetSchema, index: int, aggregate: Aggregate
) -> pl.DataFrame:
    """Group keys crossed with a histogram's bins (only the bins when ungrouped)."""
    bins = pl.DataFrame({bin_column(index): list(_bin_keys(schema, aggregate))})
    return bins if keys is None else keys.join(bins, how="cross")
