"""Accuracy previews: what a private query would cost and how accurate it would be.

No data is read: OpenDP builds the query's measurements on a zero-row frame of the
declared types, as a release would on the real data, since noise never depends on data.
The accuracy statements are those of ``analytics.private_query`` (its module docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analytics import dp_plans, dp_run
from analytics.dp_catalog import (
    KEYS_ALIAS,
    QueryError,
    alias,
    bounds,
    has_public_keys,
    histogram_bins,
    key_count,
    label,
    needs_key_selection,
    quantile_candidates,
)
from analytics.dp_plans import Plans, epsilon_of
from analytics.dp_run import ALPHA, Noise, Outcome, rank_scale
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivateQuery,
)
from i18n import Msg


@dataclass(frozen=True)
class PreviewItem:
    """The expected error of one aggregate, before any data is read.

    ``ci95_half_width`` is None where the interval depends on the data (means without a
    row hint, quantiles); ``note`` says why and what is known instead.
    """

    aggregate: str
    noise_scale: float | None
    ci95_half_width: float | None
    note: str | None


@dataclass(frozen=True)
class QueryPreview:
    """What a query would cost (OpenDP's accounting) and how accurate it would be."""

    epsilon: float
    delta: float
    aggregates: tuple[PreviewItem, ...]
    notes: tuple[str, ...]


def preview_query(
    schema: DatasetSchema,
    query: PrivateQuery,
    epsilon: float,
    delta: float = 0.0,
    rows_hint: int | None = None,
) -> QueryPreview:
    """What ``query`` would cost and how accurate it would be, without reading any data.

    OpenDP builds the same measurements as ``run_private_query`` on a zero-row frame of
    the declared types (noise never depends on data), so the epsilon, delta and noise
    scales are those a release would have.  ``rows_hint``, a public rounded row count of
    the dataset, only serves to estimate a mean's interval (spread evenly over public
    keys; not used with private keys, whose groups are unknown; too few rows: none).
    """
    if rows_hint is not None and (isinstance(rows_hint, bool) or not isinstance(rows_hint, int)):
        raise QueryError(Msg("rows_hint must be a whole number of rows"))
    if rows_hint is not None and rows_hint < 0:
        raise QueryError(Msg("rows_hint must be a whole number of rows"))
    empty = dp_plans.empty_frame(schema, query)
    outcome = dp_run.outcome(empty, schema, query, (epsilon, delta), run=False)
    noise = dp_run.accuracy_by_alias(outcome.steps)
    rows = _rows_per_group(schema, query, rows_hint)
    items = tuple(
        _preview_item(schema, query, index, outcome, noise, rows)
        for index in range(len(query.aggregates))
    )
    notes = _preview_notes(schema, query, outcome, noise)
    return QueryPreview(outcome.epsilon, outcome.delta, items, notes)


def _rows_per_group(
    schema: DatasetSchema, query: PrivateQuery, rows_hint: int | None
) -> float | None:
    if rows_hint is None or needs_key_selection(schema, query):
        return None
    return rows_hint / key_count(schema, query)  # 1 key when ungrouped


def _aggregate_epsilon(
    schema: DatasetSchema, query: PrivateQuery, index: int, outcome: Outcome
) -> float:
    """OpenDP's epsilon for one aggregate alone, at the query's global noise scale."""
    d_in = outcome.context.d_in
    if index == outcome.reused:
        return epsilon_of(outcome.steps[0].measurement.map(d_in))  # type: ignore[no-untyped-call]
    single = Plans(
        outcome.context, schema, PrivateQuery((query.aggregates[index],), query.group_by)
    )
    plan = single.value_plans(outcome.keys, None)[0]
    return epsilon_of(single.make(plan, outcome.steps[-1].scale).map(d_in))  # type: ignore[no-untyped-call]


def _preview_item(
    schema: DatasetSchema,
    query: PrivateQuery,
    index: int,
    outcome: Outcome,
    noise: dict[str, Noise],
    rows: float | None,
) -> PreviewItem:
    aggregate = query.aggregates[index]
    name, label_ = KEYS_ALIAS if index == outcome.reused else alias(index), label(aggregate)
    spent = _aggregate_epsilon(schema, query, index, outcome)
    spends = Msg("spends epsilon {epsilon}", epsilon=f"{spent:.4g}")
    if aggregate.kind == AggregateKind.MEAN:
        return _mean_item(schema.column(str(aggregate.column)), label_, noise, name, rows, spends)
    if aggregate.kind in (AggregateKind.QUANTILE, AggregateKind.MEDIAN):
        return _quantile_item(schema.column(str(aggregate.column)), aggregate, noise[name], spends)
    item = noise[name]
    note = spends
    if index == outcome.reused:
        note = Msg(
            "{note}; released only for keys whose noisy count reaches {threshold}",
            note=note,
            threshold=outcome.steps[0].threshold,
        )
    if aggregate.kind == AggregateKind.HISTOGRAM:
        bins = histogram_bins(schema.column(str(aggregate.column)), aggregate.bins)
        note = Msg(
            "{n} counts per group, each with this noise; {spends}", n=len(bins.keys), spends=spends
        )
    return PreviewItem(label_, item.scale, item.accuracy, note)


def _mean_item(
    spec: ColumnSpec,
    label_: str,
    noise: dict[str, Noise],
    name: str,
    rows: float | None,
    spends: str,
) -> PreviewItem:
    sums, lens = noise[f"{name}_sum"], noise[f"{name}_len"]
    note = Msg(
        "noisy sum (Laplace scale {sum_scale}) over noisy row count (scale {count_scale}); "
        "the interval depends on the unknown row count; {spends}",
        sum_scale=f"{sums.scale:.4g}",
        count_scale=f"{lens.scale:.4g}",
        spends=spends,
    )
    low, high = bounds(spec)
    n_low = (rows or 0.0) - lens.half_accuracy
    if rows is None or n_low < 1:
        return PreviewItem(label_, None, None, note)
    # |S~/N~ - S/N| <= (a_S + |S/N| a_N) / (N - a_N) on the joint 95% box (union bound).
    magnitude = max(abs(float(low)), abs(float(high)))
    half = min((sums.half_accuracy + magnitude * lens.half_accuracy) / n_low, high - low)
    note = Msg(
        "{note}; half-width estimated for {rows} rows per group", note=note, rows=f"{rows:.0f}"
    )
    return PreviewItem(label_, None, half, note)


def _quantile_item(
    spec: ColumnSpec, aggregate: Aggregate, noise: Noise, spends: str
) -> PreviewItem:
    candidates = quantile_candidates(spec)
    scale = rank_scale(aggregate, noise.scale)
    rank_error = scale * math.log(len(candidates) / ALPHA)
    step = (candidates[-1] - candidates[0]) / (len(candidates) - 1)
    note = Msg(
        "exponential mechanism over {n} candidates from {first} to {last} (step about {step});"
        " with 95% probability the released candidate's rank error exceeds the best "
        "candidate's by at most {rank_error} rows; no value interval without the data "
        "(a release gives the declared bounds as ci95); {spends}",
        n=len(candidates),
        first=candidates[0],
        last=candidates[-1],
        step=f"{step:.4g}",
        rank_error=f"{rank_error:.4g}",
        spends=spends,
    )
    return PreviewItem(label(aggregate), scale, None, note)


def _has_float_sum(schema: DatasetSchema, query: PrivateQuery) -> bool:
    return any(
        a.kind in (AggregateKind.SUM, AggregateKind.MEAN)
        and schema.column(str(a.column)).type == ColumnType.FLOAT
        for a in query.aggregates
    )


def _preview_notes(
    schema: DatasetSchema, query: PrivateQuery, outcome: Outcome, noise: dict[str, Noise]
) -> tuple[str, ...]:
    notes: list[str] = [
        Msg("no data was read: OpenDP sized the noise on an empty frame of the declared types"),
        Msg(
            "{n} OpenDP measurement(s) at global noise scale {scale} per unit of sensitivity",
            n=len(outcome.steps),
            scale=f"{outcome.steps[-1].scale:.6g}",
        ),
    ]
    if has_public_keys(schema, query) and query.group_by:
        notes.append(Msg("{n} public keys, each released", n=key_count(schema, query)))
    threshold = outcome.steps[0].threshold
    if threshold is not None and _has_float_sum(schema, query):
        notes.append(
            Msg(
                "float sums and means: OpenDP widens their noise by a rounding allowance per "
                "released key; shown here for one key, so a release's are larger"
            )
        )
    if threshold is not None:
        keys = noise[KEYS_ALIAS]
        params = {
            "columns": ", ".join(query.group_by),
            "scale": f"{keys.scale:.4g}",
            "threshold": threshold,
            "delta": f"{outcome.delta:.3g}",
        }
        if outcome.reused is None:
            selection = Msg(
                "DP key selection on {columns}: a key is released only where its noisy row "
                "count (a hidden count, not released) (Laplace scale {scale}) reaches "
                "{threshold}; this spends delta {delta}; keys with far fewer rows are unlikely "
                "to appear",
                **params,
            )
        else:
            selection = Msg(
                "DP key selection on {columns}: a key is released only where its noisy row count "
                "(Laplace scale {scale}) reaches {threshold}; this spends delta {delta}; keys "
                "with far fewer rows are unlikely to appear",
                **params,
            )
        notes.append(selection)
    return tuple(notes)
