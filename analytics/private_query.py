"""Tier 3: differentially private queries, computed by OpenDP 0.16's Polars context.

Every noisy number here comes from an OpenDP mechanism; this module only builds the
query plan, reads OpenDP's accounting and accuracy, and post-processes the releases.

How a query is made private
---------------------------
* **Epsilon split.** All aggregates go into one OpenDP measurement, run by a compositor
  holding the whole epsilon (``split_evenly_over=1``).  OpenDP noises each statistic
  with one global scale times its sensitivity, so each of the ``k`` noise additions
  spends ``epsilon / k`` (count, sum: one each; mean: two).  The returned ``epsilon`` is
  the compositor's privacy map, what OpenDP charges: exactly the requested epsilon (the
  measurement inside may spend a hair less, its scale being rounded up).  ``delta`` is 0.
* **Noise and accuracy.** For a count or sum, ``noise_scale`` is the scale of OpenDP's
  (integer or float) Laplace noise and ``ci95`` is ``value ± a``, ``a`` being OpenDP's
  accuracy at ``alpha=0.05`` (``P(|noise| > a) <= 0.05``).  A mean is a noisy clamped
  sum ``S~`` over a noisy row count ``N~`` (what OpenDP's ``dp.mean`` computes; we ask
  for the two parts to get an interval), clamped to the declared bounds.  Its ``ci95``
  is conservative: OpenDP's accuracies at ``alpha=0.025`` bound ``S`` and ``N`` jointly
  with probability >= 0.95 (union bound); the interval is the range of ``S / N`` over
  that box (``N >= 1``) within the declared bounds, or the bounds themselves if the
  box has no ``N >= 1``.  Its ``noise_scale`` is the delta-method Laplace-equivalent
  ``sqrt(b_S**2 + value**2 * b_N**2) / max(N~, 1)``: a guide only; rely on ``ci95``.
* **Nulls.** Nulls and NaN are summed as 0 clamped into the declared bounds (integer
  columns use the integer hull of their bounds).  A mean divides by all rows, nulls
  included.  ``count(column)`` counts non-null values.
* **Grouping.** The keys are the declared categories of a public string column, given
  to OpenDP's ``with_keys``: it releases a noisy value for every key, including keys
  absent from the data, so presence is not revealed.  Values outside the declared set
  are dropped by that join.  Rows come back in declared order.
* **Privacy unit.** One row (``contributions=1``), or one id
  (``dp.unit_of(contributions=1, identifier=...)``) whose rows OpenDP's
  ``truncate_per_group(max_rows_per_id)`` cuts to at most that many, chosen at random.
* **Size limit.** Float sums need a public bound on rows (OpenDP's ``max_length``) to
  account for rounding; OpenDP does not check it, so frames over ``MAX_ROWS`` are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import opendp.prelude as dp
import polars as pl
from opendp.extras.polars import LazyFrameQuery, Margin, dp_len
from opendp.mod import Measurement, OpenDPException

from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivateQuery,
)

MAX_AGGREGATES: Final = 8
MAX_ROWS: Final = 10_000_000
MECHANISM: Final = "OpenDP 0.16 Laplace mechanism (integer/float) via the Polars context"
ALPHA: Final = 0.05
_DTYPES: Final[dict[ColumnType, pl.DataType]] = {
    ColumnType.INTEGER: pl.Int64(),
    ColumnType.FLOAT: pl.Float64(),
    ColumnType.STRING: pl.String(),
    ColumnType.BOOLEAN: pl.Boolean(),
}
# Keeps the frame's row count when a query reads no column (a plain count).
_ROW_MARKER: Final = "__veil_row"


class QueryError(ValueError):
    """A query that this schema cannot answer; the message names the column, never a value."""


@dataclass(frozen=True)
class ReleasedValue:
    """One released statistic: the DP value, its noise scale and a 95% interval."""

    aggregate: str
    value: float
    noise_scale: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class ReleasedRow:
    """The statistics of one group (``group`` is None for an ungrouped query)."""

    group: str | None
    values: tuple[ReleasedValue, ...]


@dataclass(frozen=True)
class QueryRelease:
    """Everything a DP query releases, with the privacy loss OpenDP accounted for."""

    rows: tuple[ReleasedRow, ...]
    epsilon: float
    delta: float
    mechanism: str


# ---------------------------------------------------------------- validation


def validate_query(schema: DatasetSchema, query: PrivateQuery) -> None:
    """Raise QueryError unless ``query`` can be answered privately from ``schema``."""
    if not query.aggregates:
        raise QueryError("a private query needs at least one aggregate")
    if len(query.aggregates) > MAX_AGGREGATES:
        raise QueryError(f"a private query has at most {MAX_AGGREGATES} aggregates")
    for aggregate in query.aggregates:
        _check_aggregate(schema, aggregate)
    if query.group_by is not None:
        _check_group_by(_usable(schema, query.group_by, "group_by"))
    unit = schema.privacy_unit
    if unit.id_column is not None and unit.id_column not in schema.names:
        raise QueryError(f"column {unit.id_column!r} (privacy unit id) is not declared")
    if unit.id_column is not None and unit.max_rows_per_id < 1:
        raise QueryError(f"column {unit.id_column!r} (privacy unit id): max_rows_per_id < 1")


def _usable(schema: DatasetSchema, name: str, role: str) -> ColumnSpec:
    try:
        spec = schema.column(name)
    except KeyError:
        raise QueryError(f"column {name!r} ({role}) is not declared in the dataset") from None
    if spec.column_class == ColumnClass.SECRET:
        raise QueryError(f"column {name!r} ({role}) is secret and cannot be queried")
    return spec


def _check_aggregate(schema: DatasetSchema, aggregate: Aggregate) -> None:
    kind = aggregate.kind
    if kind == AggregateKind.COUNT:
        if aggregate.column is not None:
            _usable(schema, aggregate.column, "count")
        return
    if kind not in (AggregateKind.SUM, AggregateKind.MEAN):
        raise QueryError(f"aggregate kind {str(kind)!r} is not one of count, sum, mean")
    if aggregate.column is None:
        raise QueryError(f"{kind} needs a column")
    spec = _usable(schema, aggregate.column, str(kind))
    if not spec.is_numeric:
        raise QueryError(
            f"column {spec.name!r}: {kind} needs an integer or float column, not {spec.type}"
        )
    lower, upper = spec.lower, spec.upper
    if lower is None or upper is None or not (math.isfinite(lower) and math.isfinite(upper)):
        raise QueryError(f"column {spec.name!r}: {kind} needs declared finite lower/upper bounds")
    if not lower < upper:
        raise QueryError(f"column {spec.name!r}: {kind} needs a declared lower below upper")


def _check_group_by(spec: ColumnSpec) -> None:
    if spec.column_class != ColumnClass.PUBLIC or spec.type != ColumnType.STRING:
        raise QueryError(f"column {spec.name!r}: group_by needs a public string column")
    if not spec.categories:
        raise QueryError(f"column {spec.name!r}: group_by needs a declared set of categories")
    if len(set(spec.categories)) != len(spec.categories):
        raise QueryError(f"column {spec.name!r}: its declared categories must be distinct")


def _check_budget(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise QueryError("epsilon must be a finite number greater than 0")
    if not (isinstance(delta, int | float) and 0 <= delta < 1):
        raise QueryError("delta must be a number in [0, 1); these queries need delta = 0")


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Part:
    """One noisy column of the OpenDP plan, under an alias of ours."""

    alias: str
    expr: pl.Expr


def _dp(expr: pl.Expr) -> Any:
    # OpenDP registers the "dp" namespace on polars expressions at import; mypy can't see it.
    return expr.dp  # type: ignore[attr-defined]


def _bounds(spec: ColumnSpec) -> tuple[float, float] | tuple[int, int]:
    """Declared bounds, in the column's type (integer sums need integer bounds)."""
    assert spec.lower is not None and spec.upper is not None  # checked by validate_query
    if spec.type == ColumnType.INTEGER:
        # The integer hull of the declared interval: holds every valid integer value.
        return math.floor(spec.lower), math.ceil(spec.upper)
    return float(spec.lower), float(spec.upper)


def _clamped_sum(spec: ColumnSpec, alias: str) -> _Part:
    lower, upper = _bounds(spec)
    fill = min(max(0, lower), upper)  # 0 clamped into bounds: see "Nulls" above
    column = pl.col(spec.name)
    if spec.type == ColumnType.FLOAT:
        column = column.fill_nan(fill)
    return _Part(alias, _dp(column.fill_null(fill)).sum((lower, upper)).alias(alias))


def _parts(schema: DatasetSchema, index: int, aggregate: Aggregate) -> list[_Part]:
    """The noisy columns for one aggregate: a mean needs a sum and a row count."""
    alias = f"__veil_{index}"
    column = aggregate.column
    if aggregate.kind == AggregateKind.COUNT:
        if column is None:
            return [_Part(alias, dp_len(signed=True).alias(alias))]
        return [_Part(alias, _dp(pl.col(column)).count(signed=True).alias(alias))]
    assert column is not None  # checked by validate_query
    spec = schema.column(column)
    if aggregate.kind == AggregateKind.SUM:
        return [_clamped_sum(spec, alias)]
    rows = dp_len(signed=True).alias(f"{alias}_len")
    return [_clamped_sum(spec, f"{alias}_sum"), _Part(f"{alias}_len", rows)]


def _prepare(frame: pl.DataFrame, schema: DatasetSchema, query: PrivateQuery) -> pl.LazyFrame:
    """Only the columns the query reads, cast to their declared types.

    The OpenDP domain is inferred from these dtypes, so it depends on the declaration,
    never on the data.  Non-strict casts turn malformed values into nulls (then filled)
    rather than raising errors that could quote a data value.
    """
    if frame.height > MAX_ROWS:
        raise QueryError(f"the dataset exceeds the private query limit of {MAX_ROWS} rows")
    names = set(query.columns_used())
    id_column = schema.privacy_unit.id_column
    if id_column is not None:
        names.add(id_column)
    for name in sorted(names):
        if name not in frame.columns:
            raise QueryError(f"column {name!r} is declared but missing from the data")
    casts = [pl.col(n).cast(_DTYPES[schema.column(n).type], strict=False) for n in sorted(names)]
    marked = frame.lazy().with_columns(pl.lit(True).alias(_ROW_MARKER))
    return marked.select(pl.col(_ROW_MARKER), *casts)


def _context(data: pl.LazyFrame, schema: DatasetSchema, query: PrivateQuery, epsilon: float) -> Any:
    """A compositor over the whole budget, for exactly one measurement."""
    margins = [Margin(by=[], max_length=MAX_ROWS)]
    if query.group_by is not None:
        margins.append(Margin(by=[query.group_by], max_length=MAX_ROWS))
    return dp.Context.compositor(
        data=data,
        # One unit is one row, or one id (whose rows OpenDP truncates, see _plan).
        privacy_unit=dp.unit_of(contributions=1, identifier=schema.privacy_unit.id_column),
        privacy_loss=dp.loss_of(epsilon=float(epsilon)),
        split_evenly_over=1,
        margins=margins,
    )


def _plan(context: Any, schema: DatasetSchema, query: PrivateQuery, parts: list[_Part]) -> Any:
    """The OpenDP query: truncate per id, then aggregate (over the declared keys)."""
    plan = context.query()
    if not isinstance(plan, LazyFrameQuery):
        raise TypeError("OpenDP did not build a Polars query")  # pragma: no cover
    if schema.privacy_unit.id_column is not None:
        plan = plan.truncate_per_group(schema.privacy_unit.max_rows_per_id)
    exprs = [part.expr for part in parts]
    if query.group_by is None:
        return plan.select(*exprs)
    categories = schema.column(query.group_by).categories
    keys = pl.DataFrame(
        {query.group_by: list(categories or ())}, schema={query.group_by: pl.String}
    )
    return plan.group_by(query.group_by).agg(*exprs).with_keys(keys)


def _measurement(context: Any, plan: Any, epsilon: float) -> Measurement:
    """OpenDP's measurement of ``plan`` at the least noise OpenDP accepts for ``epsilon``.

    ``plan.resolve()`` finds that noise scale by a generic binary search (about a thousand
    OpenDP calls, a second per query).  A pure-DP Laplace plan's loss is ``C / scale``, so
    one probe at scale 1 gives the scale, which OpenDP's own ``check`` must then accept
    (nudged up by a few ulps if its conservative rounding asks); otherwise we fall back on
    ``resolve()``.  The compositor checks the loss again when it runs the measurement.
    """
    domain, metric = context.accountant.input_space

    def make(scale: float) -> Measurement:
        return dp.m.make_private_lazyframe(
            domain, metric, dp.max_divergence(), plan.polars_plan, global_scale=scale
        )

    # opendp's Measurement.map has no annotations.
    loss_at_one = float(make(1.0).map(context.d_in))  # type: ignore[no-untyped-call]
    for step in range(24):  # widen by 1, 2, 4, ... ulps until OpenDP's rounding accepts it
        measurement = make(loss_at_one / epsilon * (1 + 2**-52 * (2**step - 1)))
        if loss_at_one > 0 and measurement.check(context.d_in, epsilon):
            return measurement
    resolved: Measurement = plan.resolve()  # pragma: no cover - OpenDP's general search
    return resolved  # pragma: no cover


@dataclass(frozen=True)
class _Noise:
    """What OpenDP says about one noisy column: its scale and its accuracy at two alphas."""

    scale: float
    accuracy: float  # at ALPHA
    half_accuracy: float  # at ALPHA / 2, for intervals built from two noisy columns


def _noise_by_alias(measurement: Measurement) -> dict[str, _Noise]:
    full = dp.summarize_polars_measurement(measurement, alpha=ALPHA)
    half = dp.summarize_polars_measurement(measurement, alpha=ALPHA / 2)
    return {
        str(row["column"]): _Noise(
            float(row["scale"]), float(row["accuracy"]), float(half_row["accuracy"])
        )
        for row, half_row in zip(
            full.iter_rows(named=True), half.iter_rows(named=True), strict=True
        )
    }


def _label(aggregate: Aggregate) -> str:
    kind = str(aggregate.kind)
    return kind if aggregate.column is None else f"{kind}({aggregate.column})"


def _plain_value(label: str, value: float, noise: _Noise) -> ReleasedValue:
    interval = (value - noise.accuracy, value + noise.accuracy)
    return ReleasedValue(label, value, noise.scale, interval)


def _mean_value(
    label: str, spec: ColumnSpec, total: float, rows: float, sum_noise: _Noise, len_noise: _Noise
) -> ReleasedValue:
    """Post-process a noisy sum and a noisy row count into a mean (see module docstring)."""
    lower, upper = float(spec.lower or 0.0), float(spec.upper or 0.0)
    value = min(max(total / max(rows, 1.0), lower), upper)
    scale = math.hypot(sum_noise.scale, value * len_noise.scale) / max(rows, 1.0)
    # Joint 95% box for (S, N) by a union bound over two 97.5% intervals; N >= 1 if defined.
    s_low, s_high = total - sum_noise.half_accuracy, total + sum_noise.half_accuracy
    n_low, n_high = max(rows - len_noise.half_accuracy, 1.0), rows + len_noise.half_accuracy
    if n_high < 1.0:
        return ReleasedValue(label, value, scale, (lower, upper))
    low = min(s_low / n_low, s_low / n_high)
    high = max(s_high / n_low, s_high / n_high)
    return ReleasedValue(label, value, scale, (max(low, lower), min(high, upper)))


def _values(
    schema: DatasetSchema, query: PrivateQuery, row: dict[str, Any], noise: dict[str, _Noise]
) -> tuple[ReleasedValue, ...]:
    values = []
    for index, aggregate in enumerate(query.aggregates):
        alias, label = f"__veil_{index}", _label(aggregate)
        if aggregate.kind != AggregateKind.MEAN:
            values.append(_plain_value(label, float(row[alias]), noise[alias]))
            continue
        spec = schema.column(str(aggregate.column))
        total, rows = float(row[f"{alias}_sum"]), float(row[f"{alias}_len"])
        values.append(
            _mean_value(label, spec, total, rows, noise[f"{alias}_sum"], noise[f"{alias}_len"])
        )
    return tuple(values)


def _rows(
    schema: DatasetSchema, query: PrivateQuery, released: pl.DataFrame, noise: dict[str, _Noise]
) -> tuple[ReleasedRow, ...]:
    """One row per declared category, in declared order (or one row if ungrouped)."""
    if query.group_by is None:
        return (ReleasedRow(None, _values(schema, query, released.row(0, named=True), noise)),)
    by_key = {row[query.group_by]: row for row in released.iter_rows(named=True)}
    categories = schema.column(query.group_by).categories or ()
    if set(by_key) != set(categories):
        raise RuntimeError("OpenDP did not release exactly the declared keys")  # pragma: no cover
    return tuple(ReleasedRow(key, _values(schema, query, by_key[key], noise)) for key in categories)


def run_private_query(
    frame: pl.DataFrame,
    schema: DatasetSchema,
    query: PrivateQuery,
    epsilon: float,
    delta: float = 0.0,
) -> QueryRelease:
    """Answer ``query`` on ``frame`` with (epsilon, 0)-DP, spending exactly ``epsilon``.

    Raises QueryError for a query, budget or frame this engine refuses; nothing is
    released then.  See the module docstring for the split, accuracy and null handling.
    """
    validate_query(schema, query)
    _check_budget(epsilon, delta)
    dp.enable_features("contrib")
    data = _prepare(frame, schema, query)
    parts = [p for i, a in enumerate(query.aggregates) for p in _parts(schema, i, a)]
    try:
        context = _context(data, schema, query, epsilon)
        # Built once, so the measurement we summarize is the one we release.
        measurement = _measurement(context, _plan(context, schema, query, parts), epsilon)
    except OpenDPException as error:
        raise QueryError(f"OpenDP cannot make this query private: {error.message}") from None
    noise = _noise_by_alias(measurement)
    released: pl.DataFrame = context(measurement).collect()
    spent = float(context.accountant.map(context.d_in))
    if not spent <= epsilon:
        raise RuntimeError("OpenDP accounted more than the requested epsilon")  # pragma: no cover
    rows = _rows(schema, query, released, noise)
    return QueryRelease(rows=rows, epsilon=spent, delta=0.0, mechanism=MECHANISM)
