"""OpenDP plumbing for private queries: contexts, query plans, noise calibration, runs.

A query becomes one or more OpenDP Polars plans, each run as its own measurement
(OpenDP 0.16 crashes when collecting frames from ``make_composition``, so plans are
never composed for release; compositions serve only to check the joint loss):

* a *value plan* with every count, sum, mean, quantile and median under the group keys;
* one *histogram plan* per histogram, grouped by the group keys and the bin;
* with private group keys, first a *key plan*: a row count per key that OpenDP releases
  only where the noisy count reaches a threshold (its DP key selection).  The keys it
  releases are public from then on, and the other plans use them with ``with_keys``.

Every plan is calibrated to one global noise scale (a Laplace scale per unit of
sensitivity), so each unit of sensitivity costs the same epsilon; see
``analytics.private_query`` for the split and the accounting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import opendp.prelude as dp
import polars as pl
from opendp.extras.polars import LazyFrameQuery, Margin, dp_len
from opendp.mod import Measurement, OpenDPException

from analytics.dp_catalog import (
    KEYS_ALIAS,
    MAX_KEYS,
    QueryError,
    alias,
    bin_column,
    bin_expr,
    histogram_bins,
    parts,
    public_keys,
    where_expr,
    with_bins,
)
from analytics.schema import AggregateKind, ColumnType, DatasetSchema, PrivateQuery
from i18n import Msg

MAX_ROWS: Final = 10_000_000
#: The largest threshold tried (OpenDP's binary_search over int is i32); with it a key
#: plan's delta is negligible, which isolates its epsilon.
THRESHOLD_MAX: Final = 2**31 - 1
#: The smallest threshold tried: OpenDP refuses any threshold up to one unit's
#: contribution to a key (1 row, or max_rows_per_id rows with ids).
THRESHOLD_MIN: Final = 2
DTYPES: Final[dict[ColumnType, pl.DataType]] = {
    ColumnType.INTEGER: pl.Int64(),
    ColumnType.FLOAT: pl.Float64(),
    ColumnType.STRING: pl.String(),
    ColumnType.BOOLEAN: pl.Boolean(),
}
# Keeps the frame's row count when a query reads no column (a plain count).
_ROW_MARKER: Final = "__veil_row"
# A stand-in key of each type, to size plans before the real keys are known (previews).
_PLACEHOLDER: Final[dict[ColumnType, object]] = {
    ColumnType.STRING: "",
    ColumnType.INTEGER: 0,
    ColumnType.BOOLEAN: False,
}


def prepare(
    frame: pl.DataFrame | pl.LazyFrame, schema: DatasetSchema, query: PrivateQuery
) -> pl.LazyFrame:
    """Only the columns the query reads, cast to their declared types.

    ``frame`` may be a scan (of a file in memory: ``analytics.dp_scratch``).  The OpenDP
    domain is inferred from these dtypes, so it depends on the declaration, never on the
    data.  Non-strict casts turn malformed values into nulls (then filled) rather than
    raising errors that could quote a data value.
    """
    lazy = frame.lazy()
    if _height(frame) > MAX_ROWS:
        raise QueryError(
            Msg(
                "the dataset exceeds the private query limit of {max_rows} rows",
                max_rows=MAX_ROWS,
            )
        )
    names = _read(schema, query)
    present = lazy.collect_schema().names()
    for name in names:
        if name not in present:
            raise QueryError(
                Msg(
                    "column {name} is declared but missing from the data",
                    name=repr(name),
                )
            )
    casts = [pl.col(n).cast(DTYPES[schema.column(n).type], strict=False) for n in names]
    marked = lazy.with_columns(pl.lit(True).alias(_ROW_MARKER))
    return marked.select(pl.col(_ROW_MARKER), *casts)


def _height(frame: pl.DataFrame | pl.LazyFrame) -> int:
    if isinstance(frame, pl.DataFrame):
        return frame.height
    return int(frame.select(pl.len()).collect().item())  # a Parquet scan reads its footer


def empty_frame(schema: DatasetSchema, query: PrivateQuery) -> pl.DataFrame:
    """Zero rows of the declared types: enough for OpenDP to size a query's noise."""
    return pl.DataFrame(schema={n: DTYPES[schema.column(n).type] for n in _read(schema, query)})


def _read(schema: DatasetSchema, query: PrivateQuery) -> list[str]:
    names = set(query.columns_used())
    if schema.privacy_unit.id_column is not None:
        names.add(schema.privacy_unit.id_column)
    return sorted(names)


def open_context(
    data: pl.LazyFrame,
    schema: DatasetSchema,
    query: PrivateQuery,
    loss: tuple[Any, Any],
    weights: list[float] | None,
) -> Any:
    """An OpenDP context over ``data`` holding the whole budget ``loss``.

    With ``weights`` it is a compositor whose d_mids split the budget in those
    proportions and which charges exactly their sum; without, a privacy filter that
    charges each measurement's own loss (for plans that depend on released keys).
    """
    margins = [Margin(by=[], max_length=MAX_ROWS)]
    if query.group_by:
        margins.append(Margin(by=list(query.group_by), max_length=MAX_ROWS))
    split: dict[str, Any] = {}
    if weights is not None:
        split = {"split_evenly_over": 1} if len(weights) == 1 else {"split_by_weights": weights}
    return dp.Context.compositor(
        data=data,
        # One unit is one row, or one id (whose rows OpenDP truncates, see Plans.start).
        privacy_unit=dp.unit_of(contributions=1, identifier=schema.privacy_unit.id_column),
        privacy_loss=loss,
        margins=margins,
        **split,
    )


@dataclass(frozen=True)
class Plans:
    """Builds the OpenDP query plans of one query within one context."""

    context: Any
    schema: DatasetSchema
    query: PrivateQuery

    def start(self) -> Any:
        """A fresh plan: the rows that pass the query's filters, truncated to
        ``max_rows_per_id`` rows per id when there are ids.

        The filter is a row-by-row transformation inside the measurement (OpenDP accounts
        for it: one unit still changes at most its own rows), so how many rows pass is
        released only through noisy statistics.  It runs before the truncation, which then
        keeps up to ``max_rows_per_id`` of an id's rows that pass.
        """
        plan = self.context.query()
        if not isinstance(plan, LazyFrameQuery):
            raise TypeError("OpenDP did not build a Polars query")  # pragma: no cover
        predicate = where_expr(self.schema, self.query)
        if predicate is not None:
            plan = plan.filter(predicate)
        unit = self.schema.privacy_unit
        if unit.id_column is not None:
            plan = plan.truncate_per_group(unit.max_rows_per_id)
        return plan

    def key_plan(self) -> pl.LazyFrame:
        """A row count per private key; rows with a null key are not counted."""
        present = [pl.col(name).is_not_null() for name in self.query.group_by]
        condition = present[0]
        for other in present[1:]:
            condition = condition & other  # OpenDP 0.16 has no all_horizontal
        plan = self.start().filter(condition).group_by(*self.query.group_by)
        query: LazyFrameQuery = plan.agg(dp_len(signed=True).alias(KEYS_ALIAS))
        polars_plan: pl.LazyFrame = query.polars_plan
        return polars_plan

    def value_plans(self, keys: pl.DataFrame | None, skip: int | None) -> list[pl.LazyFrame]:
        """The value plan (if any statistic but histograms) and one plan per histogram.

        ``keys`` are the public keys (None when ungrouped); the ``skip``-th aggregate is
        left out (a count that the key plan already released).
        """
        aggregates = list(enumerate(self.query.aggregates))
        exprs = [
            part.expr
            for i, a in aggregates
            if a.kind != AggregateKind.HISTOGRAM and i != skip
            for part in parts(self.schema, i, a)
        ]
        plans = []
        if exprs:
            start = self.start()
            by = self.query.group_by
            plans.append(start.select(*exprs) if keys is None else _keyed(start, by, exprs, keys))
        for i, a in aggregates:
            if a.kind == AggregateKind.HISTOGRAM:
                start = self.start().with_columns(bin_expr(self.schema, i, a))
                by = (*self.query.group_by, bin_column(i))
                count = dp_len(signed=True).alias(alias(i))
                plans.append(_keyed(start, by, [count], with_bins(keys, self.schema, i, a)))
        return [plan.polars_plan for plan in plans]

    def make(self, plan: pl.LazyFrame, scale: float, threshold: int | None = None) -> Measurement:
        """OpenDP's measurement of ``plan`` at ``scale`` (and key ``threshold``)."""
        domain, metric = self.context.accountant.input_space
        measure = self.context.accountant.output_measure
        return dp.m.make_private_lazyframe(
            domain, metric, measure, plan, global_scale=scale, threshold=threshold
        )

    def loss_at_one(self, plan: pl.LazyFrame, threshold: int | None = None) -> float:
        """The epsilon of ``plan`` at scale 1: its sensitivity, in units of epsilon."""
        loss = self.make(plan, 1.0, threshold).map(self.context.d_in)  # type: ignore[no-untyped-call]
        return epsilon_of(loss)

    def fit(
        self, plan: pl.LazyFrame, epsilon: float, accepts: Callable[[Measurement], bool]
    ) -> Calibrated:
        """``plan`` at the least noise for ``epsilon`` that ``accepts`` takes (see ``fit``)."""
        return fit(lambda scale: self.make(plan, scale), self.context.d_in, epsilon, accepts)

    def fit_keys(self, plan: pl.LazyFrame, epsilon: float, delta: float) -> Calibrated:
        """The key plan at ``epsilon`` and the least threshold within ``delta``."""
        return fit_keys(self, plan, epsilon, delta)


def _keyed(start: Any, by: tuple[str, ...], exprs: list[pl.Expr], keys: pl.DataFrame) -> Any:
    # with_keys must follow group_by().agg(): it left-joins the public keys, so every key
    # gets a noisy value (absent ones too) and values outside the key set are dropped.
    return start.group_by(*by).agg(*exprs).with_keys(keys)


def epsilon_of(loss: Any) -> float:
    """The epsilon of a pure (float) or approximate ((epsilon, delta)) privacy loss."""
    return float(loss[0] if isinstance(loss, tuple) else loss)


def placeholder_keys(schema: DatasetSchema, query: PrivateQuery) -> pl.DataFrame:
    """One key of the right types: noise does not depend on which keys are released."""
    names = query.group_by
    values = {n: [_PLACEHOLDER[schema.column(n).type]] for n in names}
    return pl.DataFrame(values, schema={n: DTYPES[schema.column(n).type] for n in names})


def selected_keys(frame: pl.DataFrame, query: PrivateQuery, cap: int) -> pl.DataFrame:
    """The keys the key plan released, in key order; at most ``cap`` of the largest."""
    if frame.height > cap:
        # Post-processing of DP output: keeping the largest noisy counts costs nothing.
        frame = frame.sort(KEYS_ALIAS, descending=True).head(cap)
    names = list(query.group_by)
    return frame.select(names).sort(names)


def key_cap(schema: DatasetSchema, query: PrivateQuery) -> int:
    """How many selected keys the other plans may use: ``MAX_KEYS`` values per statistic."""
    widest = max(
        (
            len(histogram_bins(schema.column(a.column), a.bins).keys)
            for a in query.aggregates
            if a.kind == AggregateKind.HISTOGRAM and a.column is not None
        ),
        default=1,
    )
    return MAX_KEYS // widest


def grouped_keys(schema: DatasetSchema, query: PrivateQuery) -> pl.DataFrame | None:
    """The public keys of a public-key query; None when ungrouped."""
    return public_keys(schema, query) if query.group_by else None


# ---------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibrated:
    """One plan's measurement at its calibrated global scale (and key threshold)."""

    measurement: Measurement
    scale: float
    threshold: int | None = None


def fit(
    make: Callable[[float], Measurement],
    d_in: Any,
    epsilon: float,
    accepts: Callable[[Measurement], bool],
) -> Calibrated:
    """The least noise OpenDP accepts for ``epsilon``.

    ``plan.resolve()`` finds that noise scale by a generic binary search (about a thousand
    OpenDP calls, a second per plan).  A plan's epsilon is ``C / scale``, so one probe at
    scale 1 gives the scale, which OpenDP's own privacy map must then accept
    (``accepts``), nudged up by a few ulps if its conservative rounding asks.
    """
    loss_at_one = epsilon_of(make(1.0).map(d_in))  # type: ignore[no-untyped-call]
    if not loss_at_one > 0:
        raise RuntimeError("OpenDP found no noisy statistic in the plan")  # pragma: no cover
    for step in range(24):  # widen by 1, 2, 4, ... ulps until OpenDP's rounding accepts it
        scale = loss_at_one / epsilon * (1 + 2**-52 * (2**step - 1))
        measurement = make(scale)
        if accepts(measurement):
            return Calibrated(measurement, scale)
    raise RuntimeError("OpenDP rejected the calibrated noise scale")  # pragma: no cover


def fit_keys(plans: Plans, plan: pl.LazyFrame, epsilon: float, delta: float) -> Calibrated:
    """The key plan at ``epsilon`` with the lowest threshold whose delta fits ``delta``.

    OpenDP charges delta for the chance that a key held by one privacy unit alone gets a
    noisy count at or over the threshold; that chance falls as the threshold rises.
    """
    d_in = plans.context.d_in

    def at(scale: float, threshold: int) -> Measurement:
        return plans.make(plan, scale, threshold)

    def epsilon_fits(m: Measurement) -> bool:
        return epsilon_of(m.map(d_in)) <= epsilon  # type: ignore[no-untyped-call]

    scale = fit(lambda s: at(s, THRESHOLD_MAX), d_in, epsilon, epsilon_fits).scale

    def fits(threshold: int) -> bool:
        try:
            return within(at(scale, threshold), d_in, (epsilon, delta))
        except OpenDPException:  # below OpenDP's floor: one unit's contribution to a key
            return False

    if not fits(THRESHOLD_MAX):
        raise QueryError(Msg("delta is too small for OpenDP's key selection; use e.g. 1e-6"))

    def fits_number(threshold: float) -> bool:  # binary_search is typed for floats
        return fits(int(threshold))

    lowest = (THRESHOLD_MIN, THRESHOLD_MAX)
    found = THRESHOLD_MIN if fits(THRESHOLD_MIN) else dp.binary_search(fits_number, lowest, T=int)
    threshold = int(found)
    return Calibrated(at(scale, threshold), scale, threshold)


def within(measurement: Measurement, d_in: Any, d_out: Any) -> bool:
    """Whether OpenDP's privacy map puts ``measurement`` within ``d_out``.

    Like ``measurement.check``, which raises instead of answering False when an
    (epsilon, delta) pair is incomparable (one part over, the other under).
    """
    loss = measurement.map(d_in)  # type: ignore[no-untyped-call]
    if isinstance(d_out, tuple):
        return bool(loss[0] <= d_out[0] and loss[1] <= d_out[1])
    return bool(loss <= d_out)


def joint(steps: list[Calibrated]) -> Measurement:
    """The composition of the steps' measurements: for its privacy map only."""
    return dp.c.make_composition([step.measurement for step in steps])
