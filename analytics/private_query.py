"""Tier 3: differentially private queries, computed by OpenDP 0.16's Polars context.

Every noisy number here comes from an OpenDP mechanism; this package only builds the
query plans (``analytics.dp_catalog``, ``analytics.dp_plans``), reads OpenDP's accounting
and accuracy, and post-processes the releases.

How a query is made private
---------------------------
* **Plans.** Counts, sums, means, quantiles and medians form one OpenDP plan; each
  histogram is its own plan (its key includes the bin); private group keys add a key
  plan first (below).  Each plan is one OpenDP measurement.
* **Epsilon split.** Every plan uses one global noise scale ``s`` (Laplace scale per unit
  of sensitivity), so each statistic costs epsilon in proportion to its sensitivity:
  a count, a sum or a histogram (its bins are disjoint) one unit, a mean two (a sum and
  a count), a quantile or median two (OpenDP's exponential mechanism charges twice its
  score sensitivity).  With ``k`` units, each spends ``epsilon / k`` (with an id privacy
  unit every sensitivity is ``max_rows_per_id`` times larger).  Public keys: plans run under one
  OpenDP compositor holding the whole epsilon, split in proportion to each plan's units;
  the returned ``epsilon`` is what the compositor charges, the requested epsilon (a few
  ulps under when it splits over several plans).  ``delta`` is 0 then, whatever is given.
* **Private keys and delta.** Grouping by anything but public string columns with
  declared categories uses OpenDP's key selection: the key plan is a noisy row count
  per key (Laplace, scale ``s``), and OpenDP releases only keys whose noisy count
  reaches a threshold ``T``.  ``T`` is the lowest integer for which OpenDP's privacy map
  gives a delta within the requested delta, i.e. the chance that a key held by a single
  privacy unit passes.  All of delta goes to the key plan; the other plans then use the
  released keys as public keys (post-processing) and spend no delta.  These plans run
  under an OpenDP privacy filter holding (epsilon, delta) that charges each measurement's
  own loss: the returned (epsilon, delta) is its total, never above the request.  A
  requested plain ``count`` is the key plan's count itself; otherwise that count is
  hidden but still costs its unit.  Released counts of selected keys are conditioned on
  passing ``T``, so near ``T`` they are biased upward.  At most ``MAX_KEYS`` values per
  statistic are released (the keys with the largest noisy counts are kept).
* **Noise and accuracy.** For a count, sum or histogram bin, ``noise_scale`` is the
  scale of OpenDP's (integer or float) Laplace noise and ``ci95`` is ``value ± a``, ``a``
  being OpenDP's accuracy at ``alpha=0.05`` (``P(|noise| > a) <= 0.05``).  A mean is a
  noisy clamped sum ``S~`` over a noisy row count ``N~`` (what OpenDP's ``dp.mean``
  computes; we ask for the two parts to get an interval), clamped to the declared
  bounds.  Its ``ci95`` is conservative: OpenDP's accuracies at ``alpha=0.025`` bound
  ``S`` and ``N`` jointly with probability >= 0.95 (union bound); the interval is the
  range of ``S / N`` over that box (``N >= 1``) within the declared bounds, or the bounds
  themselves if the box has no ``N >= 1``.  Its ``noise_scale`` is the delta-method
  Laplace-equivalent ``sqrt(b_S**2 + value**2 * b_N**2) / max(N~, 1)``: a guide only.
* **Clamping (post-processing, no privacy cost).** A true count, histogram bin or group
  count is never negative, so each is released as ``max(value, 0)`` with its interval
  ``[max(lo, 0), max(hi, 0)]``; a sum is clamped the same way when its column's declared
  bounds are both >= 0 (both <= 0: to at most 0).  Means are already clamped to their
  declared bounds.  The interval's 95% statement still holds: the true value lies in
  ``value ± a`` with probability >= 0.95 and is >= 0 always, so it lies in the clamped
  interval at least as often.  A clamped value is biased upward near 0 (noise below 0
  is cut off), and an interval is ``[0, 0]`` when the noisy value fell below ``-a``.
* **Quantiles.** OpenDP's exponential mechanism picks one of ``QUANTILE_CANDIDATES``
  evenly spaced candidates over the declared bounds (integers for integer columns),
  scoring each by its rank error ``|(1 - q) * #below - q * #above|`` over the non-null,
  non-NaN values.  ``noise_scale`` is the mechanism's scale in rows of rank:
  ``s * max(q, 1 - q)`` (OpenDP reports it in an internal integer score unit that grows
  with ``MAX_ROWS``).  With probability >= 0.95 the released candidate's rank error
  exceeds the best candidate's by at most ``noise_scale * ln(20 * #candidates)`` rows.
  How far that is in the column's units depends on the data's density, which is
  private, so no data-independent interval exists: ``ci95`` is the declared bounds.
* **Nulls.** Sums and means count nulls and NaN as 0 clamped into the declared bounds
  (integer columns use the integer hull of their bounds); a mean divides by all rows.
  ``count(column)`` counts non-null values.  Quantiles rank valid values only.
  Histograms count non-null, non-NaN values; values out of bounds fall in the end bins.
  Rows with a null private key are not counted.
* **Public keys.** The cartesian product of the declared categories (at most
  ``MAX_KEYS`` values per statistic), given to OpenDP's ``with_keys``: every key gets a
  noisy value, including keys absent from the data, so presence is not revealed.  Values
  outside the declared sets are dropped.  Rows come back in declared order.
* **Privacy unit.** One row (``contributions=1``), or one id
  (``dp.unit_of(contributions=1, identifier=...)``) whose rows OpenDP's
  ``truncate_per_group(max_rows_per_id)`` cuts to at most that many, chosen at random.
* **Size limit.** Float sums need a public bound on rows (OpenDP's ``max_length``) to
  account for rounding; OpenDP does not check it, so frames over ``MAX_ROWS`` are refused.
  That rounding allowance widens a float sum's noise by about 4.4% of its bound per key
  (at ``MAX_ROWS`` = 10**7; e.g. x1.27 over 6 keys); integer sums have none.  With
  private keys a preview shows it for one key, so a release's float sums are noisier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from analytics import dp_run
from analytics.dp_catalog import (
    KEYS_ALIAS,
    MAX_AGGREGATES,
    MAX_KEYS,
    QUANTILE_CANDIDATES,
    QueryError,
    alias,
    bin_column,
    bounds,
    histogram_bins,
    label,
    needs_key_selection,
    validate_query,
)
from analytics.dp_plans import MAX_ROWS
from analytics.dp_preview import PreviewItem, QueryPreview, preview_query
from analytics.dp_run import Noise, Outcome
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnSpec,
    DatasetSchema,
    PrivateQuery,
)
from i18n import N_

__all__ = [
    "MAX_AGGREGATES",
    "MAX_KEYS",
    "MAX_ROWS",
    "QUANTILE_CANDIDATES",
    "PreviewItem",
    "QueryError",
    "QueryPreview",
    "QueryRelease",
    "ReleasedRow",
    "ReleasedValue",
    "needs_key_selection",
    "preview_query",
    "run_private_query",
    "validate_query",
]

#: Marked for the catalog (``N_``): pages show it in the reader's language, looked up whole.
MECHANISM: Final = N_(
    "OpenDP 0.16 via the Polars context: Laplace (integer/float) for counts, sums and "
    "histograms, exponential mechanism for quantiles, thresholded counts for key selection"
)


@dataclass(frozen=True)
class ReleasedValue:
    """One released statistic: the DP value, its noise scale and a 95% interval."""

    aggregate: str
    value: float
    noise_scale: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class ReleasedRow:
    """The statistics of one group: ``group`` maps each group_by column to its key
    (booleans as ``"true"``/``"false"``); None for an ungrouped query."""

    group: dict[str, str] | None
    values: tuple[ReleasedValue, ...]


@dataclass(frozen=True)
class QueryRelease:
    """Everything a DP query releases, with the privacy loss OpenDP accounted for."""

    rows: tuple[ReleasedRow, ...]
    epsilon: float
    delta: float
    mechanism: str
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- noise and values


def _plain_value(
    label_: str, value: float, noise: Noise, floor: float | None = None
) -> ReleasedValue:
    """A Laplace release ``value ± accuracy``; with ``floor``, the value and both ends of
    the interval are raised to it (post-processing: see "Clamping" in the module)."""
    low, high = value - noise.accuracy, value + noise.accuracy
    if floor is not None:
        value, low, high = max(value, floor), max(low, floor), max(high, floor)
    return ReleasedValue(label_, value, noise.scale, (low, high))


def _sum_value(label_: str, spec: ColumnSpec, value: float, noise: Noise) -> ReleasedValue:
    """A sum, kept on the side of 0 its declared bounds allow (bounds of one sign)."""
    lower, upper = bounds(spec)
    if float(lower) >= 0:
        return _plain_value(label_, value, noise, floor=0.0)
    if float(upper) <= 0:  # every term is <= 0: mirror the floor
        mirrored = _plain_value(label_, -value, noise, floor=0.0)
        low, high = mirrored.ci95
        return ReleasedValue(label_, -mirrored.value, noise.scale, (-high, -low))
    return _plain_value(label_, value, noise)


def _mean_value(
    label_: str, spec: ColumnSpec, total: float, rows: float, sum_noise: Noise, len_noise: Noise
) -> ReleasedValue:
    """Post-process a noisy sum and a noisy row count into a mean (see module docstring)."""
    lower, upper = float(spec.lower or 0.0), float(spec.upper or 0.0)
    value = min(max(total / max(rows, 1.0), lower), upper)
    scale = math.hypot(sum_noise.scale, value * len_noise.scale) / max(rows, 1.0)
    # Joint 95% box for (S, N) by a union bound over two 97.5% intervals; N >= 1 if defined.
    s_low, s_high = total - sum_noise.half_accuracy, total + sum_noise.half_accuracy
    n_low, n_high = max(rows - len_noise.half_accuracy, 1.0), rows + len_noise.half_accuracy
    if n_high < 1.0:
        return ReleasedValue(label_, value, scale, (lower, upper))
    low = min(s_low / n_low, s_low / n_high)
    high = max(s_high / n_low, s_high / n_high)
    return ReleasedValue(label_, value, scale, (max(low, lower), min(high, upper)))


def _aggregate_values(
    schema: DatasetSchema,
    aggregate: Aggregate,
    cells: dict[str, Any],
    noise: dict[str, Noise],
    name: str,
) -> list[ReleasedValue]:
    """The released values of one aggregate in one group (a histogram gives one per bin)."""
    label_ = label(aggregate)
    if aggregate.kind == AggregateKind.HISTOGRAM:
        bins = histogram_bins(schema.column(str(aggregate.column)), aggregate.bins)
        return [
            _plain_value(f"{label_}{suffix}", float(cells[f"{name}|{key}"]), noise[name], 0.0)
            for key, suffix in zip(bins.keys, bins.suffixes, strict=True)
        ]
    if aggregate.kind == AggregateKind.MEAN:
        spec = schema.column(str(aggregate.column))
        total, rows = float(cells[f"{name}_sum"]), float(cells[f"{name}_len"])
        sums, lens = noise[f"{name}_sum"], noise[f"{name}_len"]
        return [_mean_value(label_, spec, total, rows, sums, lens)]
    if aggregate.kind in (AggregateKind.QUANTILE, AggregateKind.MEDIAN):
        lower, upper = bounds(schema.column(str(aggregate.column)))
        scale = dp_run.rank_scale(aggregate, noise[name].scale)
        return [ReleasedValue(label_, float(cells[name]), scale, (float(lower), float(upper)))]
    if aggregate.kind == AggregateKind.SUM:
        spec = schema.column(str(aggregate.column))
        return [_sum_value(label_, spec, float(cells[name]), noise[name])]
    return [_plain_value(label_, float(cells[name]), noise[name], floor=0.0)]  # a count


def _cells(outcome: Outcome, query: PrivateQuery) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every released number by group key; histogram bins as ``alias|bin``."""
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    bins = {bin_column(i): alias(i) for i in range(len(query.aggregates))}
    for frame in outcome.frames:
        binned = [c for c in frame.columns if c in bins]
        for row in frame.iter_rows(named=True):
            cells = table.setdefault(tuple(row[n] for n in query.group_by), {})
            if binned:
                cells[f"{bins[binned[0]]}|{row[binned[0]]}"] = row[bins[binned[0]]]
            else:
                cells.update(row)
    return table


def _key_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _rows(schema: DatasetSchema, query: PrivateQuery, outcome: Outcome) -> tuple[ReleasedRow, ...]:
    """One row per key of the value plans, in their order (or one row if ungrouped)."""
    noise, table = dp_run.accuracy_by_alias(outcome.steps), _cells(outcome, query)
    keys = [()] if outcome.keys is None else list(outcome.keys.iter_rows())
    rows = []
    for key in keys:
        cells = table.get(key, {})
        values = [
            value
            for i, a in enumerate(query.aggregates)
            for value in _aggregate_values(
                schema, a, cells, noise, KEYS_ALIAS if i == outcome.reused else alias(i)
            )
        ]
        group = dict(zip(query.group_by, map(_key_text, key), strict=True)) if key else None
        rows.append(ReleasedRow(group, tuple(values)))
    return tuple(rows)


def _release_notes(query: PrivateQuery, outcome: Outcome) -> tuple[str, ...]:
    threshold = outcome.steps[0].threshold if outcome.steps else None
    if threshold is None or outcome.keys is None:
        return ()
    return (
        f"DP key selection on {', '.join(query.group_by)}: OpenDP released the keys whose "
        f"noisy row count reached {threshold}; {outcome.keys.height} key(s) kept "
        f"(at most {MAX_KEYS} values per statistic)",
    )


def run_private_query(
    frame: pl.DataFrame | pl.LazyFrame,
    schema: DatasetSchema,
    query: PrivateQuery,
    epsilon: float,
    delta: float = 0.0,
    scratch: Path | None = None,
) -> QueryRelease:
    """Answer ``query`` on ``frame`` with (epsilon, delta)-DP.

    ``frame`` holds the rows, or scans them from a file in memory (``dp_scratch.parquet_file``).
    For rows held in memory, ``scratch``, a directory in memory (a tmpfs), makes OpenDP read
    them from a file there instead of serializing the frame for every plan: several times
    faster on large frames (``analytics.dp_scratch``).  Never pass a directory on disk.

    Public keys (or none) spend exactly ``epsilon`` and no delta; private keys need
    ``delta > 0`` and spend at most (epsilon, delta), as OpenDP accounts it.  Raises
    QueryError for a query, budget or frame this engine refuses; nothing is released
    then.  See the module docstring for the split, accuracy and null handling.
    """
    outcome = dp_run.outcome(frame, schema, query, (epsilon, delta), run=True, scratch=scratch)
    if not (outcome.epsilon <= epsilon and outcome.delta <= delta):
        raise RuntimeError("OpenDP accounted more than the requested budget")  # pragma: no cover
    return QueryRelease(
        rows=_rows(schema, query, outcome),
        epsilon=outcome.epsilon,
        delta=outcome.delta,
        mechanism=MECHANISM,
        notes=_release_notes(query, outcome),
    )
