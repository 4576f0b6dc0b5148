"""Benchmark statistics over many enterprises, with the noise split among their nodes.

Each enterprise's node turns its own rows into one value per statistic
(:func:`enterprise_values`), encodes them as a fixed-point integer vector
(:func:`encode_partial`) and adds its share of OpenDP noise (:func:`noise_share`) before
secure aggregation masks it; the control plane learns only the sum over the surviving
nodes, which already carries all their noise, and decodes it (:func:`release`).  Nobody
ever holds an un-noised total.  The document and the spec are ``analytics.collab_spec``'s;
``docs/collaborations.md`` ("The statistics and their noise") states the guarantees.

Interface::

    parse_benchmark(doc) -> BenchmarkSpec
    enterprise_values(spec, frame) -> dict[str, float | None]   # by Statistic.label
    vector_length(spec) -> int
    encode_partial(spec, values, category) -> int64 vector       # on the node
    noise_share(spec, threshold) -> int64 vector                 # on the node, add it
    noise_scale(spec) -> float      # sigma of the summed noise, fixed-point units
    privacy_cost(spec) -> (epsilon, delta)                       # OpenDP's own maps
    release(spec, summed, survivors, threshold) -> tuple[ReleasedCell, ...]
    dominance_veto(spec, own_values, category, release) -> int64 vector  # on the node
    apply_vetoes(release, veto_sum) -> tuple[ReleasedCell, ...]
    where_it_stands(spec, own_values, category, release) -> dict[str, float]

The node sends ``(partial + share).view(np.uint64)`` to ``keys.secure_sum``; the sum
modulo 2^64 read back as int64 is the exact sum (no wrap, see ``UNIT``).

**Vector.**  Blocks, each with one run of entries per cell (the spec's ``cells``): the
number of enterprises (always, for suppression), then per statistic: ``sum`` a sum of
values; ``mean`` a sum of values and a number of enterprises with a value; ``quantile`` a
histogram of ``bins`` entries.  An enterprise adds to its own cell only.

**Sensitivity.**  Neighbouring inputs differ in one enterprise's data: its contribution
is there or not (joins / leaves), or any of its values change.  Its category is a public
attribute (it picks the cell, never a value) and the set of nodes in a round is public
to the control plane, so a leaving enterprise is a node that sends a zero partial.  Every
block is scaled so that one enterprise moves it by at most ``UNIT`` in L2: a count or
"has a value" adds ``UNIT``; a sum adds ``round(value * s)`` with
``s = UNIT / max(|lower|, |upper|, upper - lower)`` (join: ``max(|lower|, |upper|)``,
change: ``upper - lower``); a histogram adds ``floor(UNIT / sqrt 2)`` to one bin (join:
one bin, change: one bin down and another up, ``sqrt 2`` times that).

**Noise.**  Every block gets discrete Gaussian noise of the same ``sigma`` (the budget in
zCDP split evenly over the blocks), calibrated so that OpenDP's composition of the
blocks, converted to (epsilon, delta), fits the spec.  A node adds noise of scale
``sigma / sqrt(threshold)``: the sum over ``k >= threshold`` survivors has variance
``k / threshold * sigma^2 >= sigma^2``.  That sum of discrete Gaussians is not exactly
one, and Kairouz, Liu and Steinke ("The Distributed Discrete Gaussian Mechanism",
ICML 2021, Thm 1) bound the extra zCDP by ``tau / 4`` with
``tau = 10 * sum_{j<k} exp(-2 pi^2 s^2 j / (j + 1))`` for per-node scale ``s``; here
``s >= UNIT / 200`` (sigma >= 0.5 UNIT at the largest budget, threshold <= 10 000) so
``tau`` underflows to 0: nothing at double precision.

**Range.**  ``UNIT = 2^32``: rounding moves a sum by at most ``2^-33`` of one
enterprise's bound, far below any noise; ``MAX_ENTERPRISES`` contributions of at most
``UNIT`` each and 40 standard deviations of the noise of ``2 * threshold`` nodes stay
below ``2^62`` for any budget the spec allows (checked when sigma is chosen).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt
import opendp.prelude as dp
import polars as pl
from opendp.mod import Measurement

from analytics.collab_spec import BenchmarkError, BenchmarkSpec, Kind, Statistic, parse_benchmark
from analytics.sdc import SdcRules
from i18n import Msg

__all__ = [
    "BenchmarkError", "BenchmarkSpec", "Estimate", "ReleasedCell", "ReleasedStatistic",
    "apply_vetoes", "dominance_veto", "encode_partial", "enterprise_values", "noise_scale",
    "noise_share", "parse_benchmark", "privacy_cost", "release", "vector_length",
    "where_it_stands",
]  # fmt: skip

Vector = npt.NDArray[np.int64]

UNIT: Final = 2**32
HISTOGRAM_UNIT: Final = math.isqrt(UNIT * UNIT // 2)  # floor(UNIT / sqrt 2)
MAX_ENTERPRISES: Final = 10_000
#: Intervals are 95%: Gaussian for counts and sums, conservative for means and quantiles.
LEVEL: Final = 0.95
#: A veto when one enterprise holds more than this share of a noisy total: ACRO's
#: nk-dominance (n=2, k=0.9) fails only when the largest holds more than k / n of it.
DOMINANCE_SHARE: Final = SdcRules().nk_k / SdcRules().nk_n
_RANGE_LIMIT: Final = 2**62


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class Block:
    """A run of accumulators: ``width`` entries per cell, from ``offset``."""

    kind: str  # "enterprises", "sum", "valued" or "histogram"
    statistic: int | None
    width: int
    offset: int


def blocks(spec: BenchmarkSpec) -> tuple[Block, ...]:
    """The vector's blocks, in order."""
    cells, found, offset = len(spec.cells), [], 0
    wanted: list[tuple[str, int | None, int]] = [("enterprises", None, 1)]
    for i, stat in enumerate(spec.statistics):
        if stat.kind in (Kind.SUM, Kind.MEAN):
            wanted.append(("sum", i, 1))
        if stat.kind == Kind.MEAN:
            wanted.append(("valued", i, 1))
        if stat.kind == Kind.QUANTILE:
            wanted.append(("histogram", i, stat.bins))
    for kind, statistic, width in wanted:
        found.append(Block(kind, statistic, width, offset))
        offset += width * cells
    return tuple(found)


def vector_length(spec: BenchmarkSpec) -> int:
    """The length of every node's partial (and of the sum)."""
    last = blocks(spec)[-1]
    return last.offset + last.width * len(spec.cells)


def _block(spec: BenchmarkSpec, kind: str, statistic: int | None) -> Block:
    return next(b for b in blocks(spec) if b.kind == kind and b.statistic == statistic)


def sum_scale(stat: Statistic) -> float:
    """Fixed-point units per unit of a sum's values: one enterprise moves it by <= UNIT."""
    return UNIT / max(abs(stat.lower), abs(stat.upper), stat.upper - stat.lower)


def _fixed(stat: Statistic, value: float) -> int:
    scale = sum_scale(stat)
    low, high = math.ceil(stat.lower * scale), math.floor(stat.upper * scale)
    if max(abs(low), abs(high), high - low) > UNIT:  # pragma: no cover - by construction
        raise RuntimeError("a fixed-point bound exceeds the unit")
    return min(max(round(value * scale), low), high)


def _bin(stat: Statistic, value: float) -> int:
    width = (stat.upper - stat.lower) / stat.bins
    return min(max(int((value - stat.lower) // width), 0), stat.bins - 1)


# ---------------------------------------------------------------- on the node


def enterprise_values(spec: BenchmarkSpec, frame: pl.DataFrame) -> dict[str, float | None]:
    """This enterprise's value per statistic (by label), from its own rows.

    A count is 1 (it takes part); a sum is the sum of the column's non-null values (0 with
    none); a mean or quantile's value is their mean, or None with none.  Clamped to the
    statistic's bounds.  NaN counts as null.
    """
    values: dict[str, float | None] = {}
    for stat in spec.statistics:
        if stat.kind == Kind.COUNT:
            values[stat.label] = 1.0
            continue
        assert stat.column is not None
        if stat.column not in frame.columns:
            raise BenchmarkError(
                Msg("column {name} is missing from this enterprise's data", name=stat.column)
            )
        column = frame.get_column(stat.column).cast(pl.Float64, strict=False).fill_nan(None)
        present = column.drop_nulls()
        if stat.kind == Kind.SUM:
            raw: float | None = float(present.sum()) if present.len() else 0.0
        else:
            raw = float(present.mean()) if present.len() else None  # type: ignore[arg-type]
        values[stat.label] = None if raw is None else min(max(raw, stat.lower), stat.upper)
    return values


def encode_partial(
    spec: BenchmarkSpec, values: Mapping[str, float | None], category: str | None
) -> Vector:
    """This node's partial: its enterprise's values, fixed point, in its category's cell."""
    vector = np.zeros(vector_length(spec), dtype=np.int64)
    cell = spec.cell_of(category)
    vector[_block(spec, "enterprises", None).offset + cell] = UNIT
    for i, stat in enumerate(spec.statistics):
        if stat.kind == Kind.COUNT:
            continue
        if stat.label not in values:
            raise BenchmarkError(Msg("no value given for statistic {i}", i=i))
        value = values[stat.label]
        if value is None or not math.isfinite(value):
            continue  # no rows with a value: adds nothing (a sum's value is never None)
        if stat.kind in (Kind.SUM, Kind.MEAN):
            vector[_block(spec, "sum", i).offset + cell] = _fixed(stat, value)
        if stat.kind == Kind.MEAN:
            vector[_block(spec, "valued", i).offset + cell] = UNIT
        if stat.kind == Kind.QUANTILE:
            block = _block(spec, "histogram", i)
            vector[block.offset + cell * stat.bins + _bin(stat, value)] = HISTOGRAM_UNIT
    return vector


def noise_share(spec: BenchmarkSpec, threshold: int) -> Vector:
    """This node's share of the noise, drawn by OpenDP: discrete Gaussian of scale
    ``sigma / sqrt(threshold)`` on every entry.  Add it to the partial before masking."""
    _check_threshold(threshold)
    return np.array(_share_measurement(spec, threshold)([0] * vector_length(spec)), np.int64)


@lru_cache(maxsize=64)
def _share_measurement(spec: BenchmarkSpec, threshold: int) -> Measurement:
    domain = dp.vector_domain(dp.atom_domain(T="i64"), size=vector_length(spec))
    scale = noise_scale(spec) / math.sqrt(threshold)
    return dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=scale)


def _check_threshold(threshold: int) -> None:
    if not (isinstance(threshold, int) and 1 <= threshold <= MAX_ENTERPRISES):
        raise BenchmarkError(
            Msg("threshold: expected an integer from 1 to {limit}", limit=MAX_ENTERPRISES)
        )


# ---------------------------------------------------------------- accounting


def _release_measurement(spec: BenchmarkSpec, scale: float) -> Measurement:
    """The summed noise as OpenDP sees it: one Gaussian of ``scale`` per block, composed,
    as (epsilon, delta) at the spec's delta.  For its privacy map only."""
    dp.enable_features("contrib")
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    parts = [dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=scale) for _ in blocks(spec)]
    composed = dp.c.make_composition(parts)
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(composed), delta=spec.delta)


def _epsilon_at(spec: BenchmarkSpec, scale: float) -> float:
    return float(_release_measurement(spec, scale).map(UNIT)[0])  # type: ignore[no-untyped-call]


@lru_cache(maxsize=64)
def noise_scale(spec: BenchmarkSpec) -> float:
    """Sigma of the summed noise on every entry (fixed-point units): the least, within
    2^-40, whose OpenDP privacy map fits the spec's (epsilon, delta)."""
    low, high = float(UNIT) / 64, float(UNIT) * 2**20
    for _ in range(80):  # bisection on log scale; epsilon falls as the scale grows
        middle = math.sqrt(low * high)
        if _epsilon_at(spec, middle) <= spec.epsilon:
            high = middle
        else:
            low = middle
        if high / low < 1 + 2**-40:
            break
    if _epsilon_at(spec, high) > spec.epsilon:  # pragma: no cover - the bracket is wide
        raise RuntimeError("OpenDP accepts no noise scale in the bracket")
    if MAX_ENTERPRISES * UNIT + 40 * math.sqrt(2) * high >= _RANGE_LIMIT:  # pragma: no cover
        raise BenchmarkError(Msg("epsilon is too small for the fixed-point range"))
    return high


def privacy_cost(spec: BenchmarkSpec) -> tuple[float, float]:
    """(epsilon, delta) of the release, by OpenDP's maps, when at least threshold nodes
    survive (their summed noise has at least ``noise_scale(spec)``'s variance)."""
    epsilon, delta = _release_measurement(spec, noise_scale(spec)).map(UNIT)  # type: ignore[no-untyped-call]
    return float(epsilon), float(delta)


# ---------------------------------------------------------------- release


@dataclass(frozen=True)
class Estimate:
    """A released value and its 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class ReleasedStatistic:
    """One statistic of one cell; ``suppressed`` says why it is not released.

    ``estimate``: a count, sum or mean; ``quantiles``: per level of a quantile;
    ``total``: the noisy sum behind a sum or mean (for dominance); ``cdf``: a quantile's
    post-processed CDF at the bin edges (for where-it-stands).
    """

    label: str
    estimate: Estimate | None = None
    quantiles: tuple[tuple[float, Estimate], ...] = ()
    total: float | None = None
    cdf: tuple[float, ...] = ()
    suppressed: Msg | None = None


@dataclass(frozen=True)
class ReleasedCell:
    """One cell: its noisy number of enterprises and its statistics, or why not."""

    category: str
    enterprises: Estimate | None
    statistics: tuple[ReleasedStatistic, ...]
    suppressed: Msg | None = None


def _z(tail: float) -> float:
    return NormalDist().inv_cdf(1 - tail)


def _signed(summed: npt.ArrayLike, length: int) -> npt.NDArray[np.float64]:
    array = np.asarray(summed)
    if array.dtype == np.uint64:
        array = array.view(np.int64)
    if array.dtype != np.int64 or array.shape != (length,):
        raise BenchmarkError(
            Msg("the summed vector: expected {length} 64-bit integers", length=length)
        )
    return array.astype(np.float64)


def release(
    spec: BenchmarkSpec, summed: npt.ArrayLike, survivors: int, threshold: int
) -> tuple[ReleasedCell, ...]:
    """The released statistics per cell, decoded from the noisy sum of ``survivors`` nodes'
    partials and shares.  Post-processing only; refused below ``threshold`` survivors."""
    _check_threshold(threshold)
    if not (isinstance(survivors, int) and threshold <= survivors <= MAX_ENTERPRISES):
        raise BenchmarkError(
            Msg("fewer nodes survived than the threshold: nothing can be released")
        )
    sums = _signed(summed, vector_length(spec))
    sigma = noise_scale(spec) * math.sqrt(survivors / threshold)
    return tuple(_cell(spec, sums, sigma, c) for c in range(len(spec.cells)))


def _cell(spec: BenchmarkSpec, sums: npt.NDArray[np.float64], sigma: float, c: int) -> ReleasedCell:
    count = _count(sums[_block(spec, "enterprises", None).offset + c], sigma)
    category = spec.cells[c]
    if count.value < spec.min_participants:
        reason = Msg("suppressed: fewer than {n} enterprises", n=spec.min_participants)
        return ReleasedCell(category, None, tuple(_withheld(spec, reason)), reason)
    statistics = []
    for i, stat in enumerate(spec.statistics):
        if stat.kind == Kind.COUNT:
            statistics.append(ReleasedStatistic(stat.label, count))
        elif stat.kind == Kind.SUM:
            total = sums[_block(spec, "sum", i).offset + c] / sum_scale(stat)
            spread = _z((1 - LEVEL) / 2) * sigma / sum_scale(stat)
            estimate = Estimate(total, total - spread, total + spread)
            statistics.append(ReleasedStatistic(stat.label, estimate, total=total))
        elif stat.kind == Kind.MEAN:
            statistics.append(_mean(spec, stat, i, sums, sigma, c))
        else:
            histogram = sums[_block(spec, "histogram", i).offset + c * stat.bins :][: stat.bins]
            statistics.append(_quantiles(spec, stat, histogram / HISTOGRAM_UNIT, sigma))
    return ReleasedCell(category, count, tuple(statistics))


def _withheld(spec: BenchmarkSpec, reason: Msg) -> list[ReleasedStatistic]:
    return [ReleasedStatistic(s.label, suppressed=reason) for s in spec.statistics]


def _count(fixed: float, sigma: float) -> Estimate:
    value, spread = fixed / UNIT, _z((1 - LEVEL) / 2) * sigma / UNIT
    return Estimate(max(value, 0.0), max(value - spread, 0.0), max(value + spread, 0.0))


def _mean(
    spec: BenchmarkSpec,
    stat: Statistic,
    i: int,
    sums: npt.NDArray[np.float64],
    sigma: float,
    c: int,
) -> ReleasedStatistic:
    """Noisy sum over noisy number of enterprises with a value (floored at 1).  Interval:
    the range of sum / number over a box of both at 97.5% each (so at least 95%)."""
    scale = sum_scale(stat)
    total = sums[_block(spec, "sum", i).offset + c] / scale
    number = sums[_block(spec, "valued", i).offset + c] / UNIT
    if number < spec.min_participants:
        reason = Msg("suppressed: fewer than {n} enterprises with a value", n=spec.min_participants)
        return ReleasedStatistic(stat.label, suppressed=reason)
    z = _z((1 - LEVEL) / 4)
    totals = (total - z * sigma / scale, total + z * sigma / scale)
    numbers = (number - z * sigma / UNIT, number + z * sigma / UNIT)
    low, high = stat.lower, stat.upper
    if numbers[0] > 0:
        ratios = [t / n for t in totals for n in numbers]
        low, high = max(min(ratios), stat.lower), min(max(ratios), stat.upper)
    value = min(max(total / max(number, 1.0), stat.lower), stat.upper)
    value = min(max(value, low), high)
    return ReleasedStatistic(stat.label, Estimate(value, low, high), total=total)


def _quantiles(
    spec: BenchmarkSpec, stat: Statistic, histogram: npt.NDArray[np.float64], sigma: float
) -> ReleasedStatistic:
    """Quantiles from the noisy histogram (in enterprises), with intervals from a band."""
    bins, number = stat.bins, float(histogram.sum())
    if number < spec.min_participants:
        reason = Msg("suppressed: fewer than {n} enterprises with a value", n=spec.min_participants)
        return ReleasedStatistic(stat.label, suppressed=reason)
    edges = np.linspace(stat.lower, stat.upper, bins + 1)
    clipped = np.clip(histogram, 0.0, None)
    cdf = np.concatenate([[0.0], np.minimum(np.cumsum(clipped) / clipped.sum(), 1.0)])
    cdf[-1] = 1.0  # exactly, whatever the rounding of the cumulative sum
    noisy = np.concatenate([[0.0], np.cumsum(histogram)])  # un-clipped, Gaussian noise
    spread = sigma / HISTOGRAM_UNIT
    z = _z((1 - LEVEL) / max(bins - 1, 1))
    found = []
    for q in stat.q:
        j = np.arange(bins + 1)
        gap = noisy - q * number  # estimates (rank below edge j) - q * N
        sd = spread * np.sqrt((1 - q) ** 2 * j + q**2 * (bins - j))
        below = [k for k in range(bins + 1) if k == 0 or gap[k] + z * sd[k] < 0]
        above = [k for k in range(bins + 1) if k == bins or gap[k] - z * sd[k] >= 0]
        low, high = float(edges[max(below)]), float(edges[min(above)])
        point = _invert(cdf, edges, q)
        found.append((q, Estimate(point, min(low, point), max(high, point))))
    return ReleasedStatistic(stat.label, quantiles=tuple(found), cdf=tuple(cdf.tolist()))


def _invert(cdf: npt.NDArray[np.float64], edges: npt.NDArray[np.float64], q: float) -> float:
    """The level ``q`` of a monotone CDF at bin edges, linear within a bin."""
    j = int(np.searchsorted(cdf, q, side="left"))
    j = min(max(j, 1), len(cdf) - 1)
    rise = cdf[j] - cdf[j - 1]
    inside = (q - cdf[j - 1]) / rise if rise > 0 else 0.0
    return float(edges[j - 1] + inside * (edges[j] - edges[j - 1]))


# ---------------------------------------------------------------- after the release


def dominance_veto(
    spec: BenchmarkSpec,
    own_values: Mapping[str, float | None],
    category: str | None,
    noisy_release: tuple[ReleasedCell, ...],
    share: float = DOMINANCE_SHARE,
) -> Vector:
    """1 per (cell, statistic) where this enterprise's own value is more than ``share`` of
    the released noisy total of a sum or mean in its cell; 0 elsewhere.  Entry
    ``cell * len(statistics) + statistic``.  Summed by secure aggregation, then
    :func:`apply_vetoes`."""
    count = len(spec.statistics)
    veto = np.zeros(len(spec.cells) * count, dtype=np.int64)
    c = spec.cell_of(category)
    for i, released in enumerate(noisy_release[c].statistics):
        own = own_values.get(released.label)
        if released.total is None or own is None or spec.statistics[i].kind == Kind.QUANTILE:
            continue
        if abs(own) > share * abs(released.total):
            veto[c * count + i] = 1
    return veto


def apply_vetoes(
    noisy_release: tuple[ReleasedCell, ...], veto_sum: npt.ArrayLike
) -> tuple[ReleasedCell, ...]:
    """The release with every (cell, statistic) that any enterprise vetoed suppressed."""
    vetoes = np.asarray(veto_sum).astype(np.int64)
    reason = Msg("suppressed: one or two enterprises dominate this total")
    cells = []
    for c, cell in enumerate(noisy_release):
        count = len(cell.statistics)
        statistics = tuple(
            ReleasedStatistic(s.label, suppressed=reason) if vetoes[c * count + i] > 0 else s
            for i, s in enumerate(cell.statistics)
        )
        cells.append(replace(cell, statistics=statistics))
    return tuple(cells)


def where_it_stands(
    spec: BenchmarkSpec,
    own_values: Mapping[str, float | None],
    category: str | None,
    noisy_release: tuple[ReleasedCell, ...],
) -> dict[str, float]:
    """This enterprise's percentile (0 to 100) per released quantile statistic of its own
    cell, read off the released CDF: for this enterprise's eyes only, on its node."""
    found = {}
    cell = noisy_release[spec.cell_of(category)]
    for stat, released in zip(spec.statistics, cell.statistics, strict=True):
        own = own_values.get(stat.label)
        if stat.kind != Kind.QUANTILE or not released.cdf or own is None:
            continue
        position = (min(max(own, stat.lower), stat.upper) - stat.lower) / (stat.upper - stat.lower)
        x = position * stat.bins
        j = min(int(x), stat.bins - 1)
        cdf = released.cdf
        found[stat.label] = 100.0 * (cdf[j] + (x - j) * (cdf[j + 1] - cdf[j]))
    return found


# ---------------------------------------------------------------- as JSON, between machines


def _estimate_json(estimate: Estimate | None) -> list[float] | None:
    return None if estimate is None else [estimate.value, estimate.low, estimate.high]


def _estimate_of(value: object) -> Estimate | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 3):
        raise BenchmarkError(Msg("a released estimate is [value, low, high]"))
    return Estimate(*(float(v) for v in value))


def release_to_json(cells: tuple[ReleasedCell, ...]) -> list[dict[str, object]]:
    """The release as JSON (what the control plane stores, shows and hands the nodes for
    the dominance vetoes); a suppression is its English sentence."""
    return [
        {
            "category": cell.category,
            "enterprises": _estimate_json(cell.enterprises),
            "suppressed": None if cell.suppressed is None else str(cell.suppressed),
            "statistics": [
                {
                    "label": s.label,
                    "estimate": _estimate_json(s.estimate),
                    "quantiles": [[q, _estimate_json(e)] for q, e in s.quantiles],
                    "total": s.total,
                    "cdf": list(s.cdf),
                    "suppressed": None if s.suppressed is None else str(s.suppressed),
                }
                for s in cell.statistics
            ],
        }
        for cell in cells
    ]


def _suppressed(text: object) -> Msg | None:
    """A suppression read back from JSON: its stored English sentence, kept as it is."""
    return None if text is None else Msg("{reason}", reason=str(text))


def release_from_json(spec: BenchmarkSpec, cells: object) -> tuple[ReleasedCell, ...]:
    """A release read back from JSON (a node reads the control plane's, for its vetoes and
    its standing), checked against ``spec``'s cells and statistics."""
    if not isinstance(cells, list) or len(cells) != len(spec.cells):
        raise BenchmarkError(Msg("the release does not have this benchmark's cells"))
    out = []
    for cell in cells:
        stats = cell.get("statistics") if isinstance(cell, dict) else None
        if not isinstance(stats, list) or len(stats) != len(spec.statistics):
            raise BenchmarkError(Msg("the release does not have this benchmark's statistics"))
        statistics = tuple(
            ReleasedStatistic(
                str(s["label"]),
                _estimate_of(s.get("estimate")),
                tuple((float(q), e) for q, raw in s.get("quantiles") or []
                      if (e := _estimate_of(raw)) is not None),
                None if s.get("total") is None else float(s["total"]),
                tuple(float(v) for v in s.get("cdf") or []),
                _suppressed(s.get("suppressed")),
            )
            for s in stats
        )  # fmt: skip
        suppressed = cell.get("suppressed")
        out.append(
            ReleasedCell(
                str(cell["category"]),
                _estimate_of(cell.get("enterprises")),
                statistics,
                _suppressed(suppressed),
            )
        )
    return tuple(out)
