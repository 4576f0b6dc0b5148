"""Outcome KPIs: a KPI's change between a baseline and an evaluation period, with DP.

A KPI contract (``docs/verdicts.md``) names a KPI over declared columns of one dataset,
a numeric time column and two periods.  What is released is only the DP statistics of
each period (sums and row counts, ``analytics.private_query``); the KPI, its relative
change and the verdict are post-processing of them (no privacy cost).

KPIs (each from the period's rows, a census of the period: no sampling model)
---------------------------------------------------------------------------------
* ``oee``: mean(availability) x mean(performance) x mean(quality), three declared ratio
  columns (bounds within [0, 1]); better upward.
* ``scrap_rate``: sum(scrap) / sum(produced); better downward.
* ``energy_per_unit``: sum(energy) / sum(units); better downward.
* ``lead_time``: mean(lead_time); better downward.

Budget
------
Each period is one private query (``period_query``: the role columns' sums, and the row
count when a mean needs it, filtered to ``from <= time < to``) that spends half of the
evaluation's epsilon, so the two compose to the whole epsilon whatever the privacy unit
(sequential composition; for one row per individual the periods are disjoint and half
would be conservative).  No delta.

The interval
------------
Every released statistic ``v`` has OpenDP's Laplace scale ``b``.  With ``K`` statistics
in all and confidence ``1 - alpha``, each true value lies in ``v +- a`` (``a``: OpenDP's
accuracy of scale ``b`` at ``alpha / K``, the larger of its continuous and discrete
Laplace accuracies), all at once with probability >= ``1 - alpha`` (union bound).  True
sums and counts are >= 0 (the columns' bounds are), and each mean lies within its
column's bounds.  Each KPI is a product of ratios that grow with their numerator and
shrink with their denominator, so over that box its range is reached at the box's
corners: the interval of the relative change follows from the two periods' ranges.  It
accounts for the DP noise only; the KPI is the value over the period's rows, not an
estimate of a larger population, so it has no sampling variation.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import opendp.prelude as dp
import polars as pl

from analytics.dp_catalog import QueryError, label
from analytics.private_query import QueryRelease, run_private_query, validate_query
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    DatasetSchema,
    Filter,
    FilterOp,
    PrivateQuery,
)
from i18n import Msg

BASELINE, EVALUATION = "baseline", "evaluation"
PERIODS: Final = (BASELINE, EVALUATION)
#: Confidence levels a contract may ask for.
MIN_CONFIDENCE, MAX_CONFIDENCE = 0.5, 0.999
MAX_TARGET: Final = 10.0


class KpiError(QueryError):
    """A KPI document or contract this dataset cannot answer; names columns, never values."""


class Kpi(enum.StrEnum):
    OEE = "oee"
    SCRAP_RATE = "scrap_rate"
    ENERGY_PER_UNIT = "energy_per_unit"
    LEAD_TIME = "lead_time"


class Direction(enum.StrEnum):
    UP = "up"  # larger is better: the change is KPI_e / KPI_b - 1
    DOWN = "down"  # smaller is better: the change is 1 - KPI_e / KPI_b


class Verdict(enum.StrEnum):
    MET = "met"
    NOT_MET = "not_met"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class _Shape:
    """A KPI as a product of ratios ``sum(numerator) / denominator``.

    ``terms`` pairs a numerator role with its denominator: another role's sum, or
    ``None`` for the row count (a mean, kept within the numerator column's bounds).
    """

    roles: tuple[str, ...]
    terms: tuple[tuple[str, str | None], ...]
    direction: Direction
    ratio_columns: bool = False  # roles must be declared within [0, 1]


SHAPES: Final[Mapping[Kpi, _Shape]] = {
    Kpi.OEE: _Shape(
        ("availability", "performance", "quality"),
        (("availability", None), ("performance", None), ("quality", None)),
        Direction.UP,
        ratio_columns=True,
    ),
    Kpi.SCRAP_RATE: _Shape(("scrap", "produced"), (("scrap", "produced"),), Direction.DOWN),
    Kpi.ENERGY_PER_UNIT: _Shape(("energy", "units"), (("energy", "units"),), Direction.DOWN),
    Kpi.LEAD_TIME: _Shape(("lead_time",), (("lead_time", None),), Direction.DOWN),
}


@dataclass(frozen=True)
class Period:
    """Rows with ``start <= time < end``."""

    start: float
    end: float


@dataclass(frozen=True)
class KpiQuery:
    """What an evaluation computes: a KPI's statistics in two periods of one dataset."""

    kpi: Kpi
    columns: tuple[tuple[str, str], ...]  # (role, column), in the shape's role order
    time_column: str
    baseline: Period
    evaluation: Period

    @property
    def shape(self) -> _Shape:
        return SHAPES[self.kpi]

    def column(self, role: str) -> str:
        return dict(self.columns)[role]

    def columns_used(self) -> frozenset[str]:
        return frozenset({*(c for _, c in self.columns), self.time_column})

    def document(self) -> dict[str, Any]:
        """The query as its JSON document (``parse_kpi`` reads it back)."""
        return {
            "kpi": str(self.kpi),
            "columns": dict(self.columns),
            "time_column": self.time_column,
            "baseline": {"from": self.baseline.start, "to": self.baseline.end},
            "evaluation": {"from": self.evaluation.start, "to": self.evaluation.end},
        }


# ---------------------------------------------------------------- reading and checking


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KpiError(Msg("kpi: {where} must be a finite number", where=where))
    return float(value)


def _period(value: Any, name: str) -> Period:
    if not isinstance(value, dict) or set(value) != {"from", "to"}:
        raise KpiError(Msg('kpi: {name} must be {{"from": number, "to": number}}', name=name))
    period = Period(_number(value["from"], f"{name}.from"), _number(value["to"], f"{name}.to"))
    if not period.start < period.end:
        raise KpiError(Msg("kpi: {name}.from must be below {name}.to", name=name))
    return period


def parse_kpi(document: Any) -> KpiQuery:
    """A KPI query from its document; KpiError (saying what to fix) if malformed."""
    fields = {"kpi", "columns", "time_column", "baseline", "evaluation"}
    if not isinstance(document, dict) or set(document) != fields:
        raise KpiError(Msg("kpi: give exactly {fields}", fields=", ".join(sorted(fields))))
    try:
        kpi = Kpi(document["kpi"])
    except ValueError:
        raise KpiError(
            Msg("kpi: kpi must be one of {kinds}", kinds=", ".join(k.value for k in Kpi))
        ) from None
    shape, columns = SHAPES[kpi], document["columns"]
    if not isinstance(columns, dict) or set(columns) != set(shape.roles):
        raise KpiError(
            Msg(
                "kpi: columns must map exactly {roles} to dataset columns",
                roles=", ".join(shape.roles),
            )
        )
    if not all(isinstance(c, str) and c for c in columns.values()):
        raise KpiError(Msg("kpi: each column must be a column name"))
    time_column = document["time_column"]
    if not isinstance(time_column, str) or not time_column:
        raise KpiError(Msg("kpi: time_column must be a column name"))
    baseline = _period(document["baseline"], BASELINE)
    evaluation = _period(document["evaluation"], EVALUATION)
    if baseline.start < evaluation.end and evaluation.start < baseline.end:
        raise KpiError(Msg("kpi: the baseline and evaluation periods must not overlap"))
    pairs = tuple((role, columns[role]) for role in shape.roles)
    return KpiQuery(kpi, pairs, time_column, baseline, evaluation)


def validate_kpi(schema: DatasetSchema, query: KpiQuery) -> None:
    """Raise KpiError unless ``query`` can be answered from ``schema``'s declaration."""
    for role, name in (*query.columns, ("time_column", query.time_column)):
        if name not in schema.names:
            raise KpiError(
                Msg("kpi: column {name} ({role}) is not declared", name=repr(name), role=role)
            )
        spec = schema.column(name)
        if spec.column_class == ColumnClass.SECRET:
            raise KpiError(
                Msg(
                    "kpi: column {name} ({role}) is secret and cannot be used; "
                    "choose a column that is not secret",
                    name=repr(name),
                    role=role,
                )
            )
        if not spec.is_numeric:
            raise KpiError(
                Msg(
                    "kpi: column {name} ({role}) must be numeric (integer or float), not {type}",
                    name=repr(name),
                    role=role,
                    type=str(spec.type),
                )
            )
        if role == "time_column":
            continue
        if spec.nullable:
            raise KpiError(
                Msg(
                    "kpi: column {name} ({role}) is nullable; a KPI needs a column "
                    "declared without empty values",
                    name=repr(name),
                    role=role,
                )
            )
        low, high = spec.lower, spec.upper
        if low is None or high is None or low < 0:
            raise KpiError(
                Msg(
                    "kpi: column {name} ({role}) needs declared bounds with lower >= 0",
                    name=repr(name),
                    role=role,
                )
            )
        if query.shape.ratio_columns and high > 1:
            raise KpiError(
                Msg(
                    "kpi: column {name} ({role}) must be a ratio declared within [0, 1]",
                    name=repr(name),
                    role=role,
                )
            )
    for period in PERIODS:
        validate_query(schema, period_query(query, period))


# ---------------------------------------------------------------- computing


def period_query(query: KpiQuery, period: str) -> PrivateQuery:
    """The private query of one period: each role's sum, then the row count if a mean
    needs it, over the rows of that period."""
    window = query.baseline if period == BASELINE else query.evaluation
    aggregates = [Aggregate(AggregateKind.SUM, column) for _, column in query.columns]
    if any(denominator is None for _, denominator in query.shape.terms):
        aggregates.append(Aggregate(AggregateKind.COUNT))
    where = (
        Filter(query.time_column, FilterOp.GE, window.start),
        Filter(query.time_column, FilterOp.LT, window.end),
    )
    return PrivateQuery(tuple(aggregates), (), where)


def run_kpi(
    frame: pl.DataFrame | pl.LazyFrame, schema: DatasetSchema, query: KpiQuery, epsilon: float
) -> dict[str, QueryRelease]:
    """Each period's DP statistics, each period with half of ``epsilon`` (pure DP)."""
    validate_kpi(schema, query)
    return {
        period: run_private_query(frame, schema, period_query(query, period), epsilon / 2)
        for period in PERIODS
    }


# ---------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Statistic:
    """One released statistic of a period: its label, DP value and Laplace scale."""

    aggregate: str
    value: float
    noise_scale: float


@dataclass(frozen=True)
class Change:
    """The KPI in both periods, its relative change (improvement > 0), the interval at
    ``confidence`` (None: unbounded on that side) and the verdict against ``target``."""

    baseline: float
    evaluation: float
    change: float
    interval: tuple[float | None, float | None]
    confidence: float
    target: float
    verdict: Verdict
    direction: Direction


def _accuracy(scale: float, alpha: float) -> float:
    """OpenDP's Laplace accuracy: ``P(|noise| > a) <= alpha`` (continuous or integer)."""
    if scale <= 0:
        return 0.0
    return max(
        float(dp.laplacian_scale_to_accuracy(scale, alpha)),
        float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha)),
    )


def _kpi_range(
    query: KpiQuery,
    schema: DatasetSchema,
    stats: Mapping[str, tuple[float, float, float]],
) -> tuple[float, float, float]:
    """The KPI's point value and its (low, high) over the box of ``stats`` (value, lo, hi
    per role, ``""`` the row count)."""
    point, low, high = 1.0, 1.0, 1.0
    for numerator, denominator in query.shape.terms:
        num = stats[numerator]
        den = stats[denominator if denominator is not None else ""]
        if denominator is None:
            spec = schema.column(query.column(numerator))
            bottom, top = float(spec.lower or 0.0), float(spec.upper or 0.0)
        else:
            bottom, top = 0.0, math.inf
        point *= min(max(num[0] / den[0], bottom), top) if den[0] > 0 else top
        low *= min(max(num[1] / den[2], bottom), top) if den[2] > 0 else bottom
        high *= min(max(num[2] / den[1], bottom), top) if den[1] > 0 else top
    return point, low, high


def _period_stats(
    query: KpiQuery, values: Sequence[Statistic], alpha: float
) -> dict[str, tuple[float, float, float]]:
    roles = [role for role, _ in query.columns]
    expected = [label(a) for a in period_query(query, BASELINE).aggregates]
    if [v.aggregate for v in values] != expected:
        raise KpiError(Msg("kpi: the released statistics do not match the KPI"))
    keys = [*roles, ""][: len(values)]
    stats = {}
    for key, stat in zip(keys, values, strict=True):
        a = _accuracy(stat.noise_scale, alpha)
        stats[key] = (max(stat.value, 0.0), max(stat.value - a, 0.0), max(stat.value + a, 0.0))
    return stats


def statistics_count(query: KpiQuery) -> int:
    """How many statistics an evaluation releases (both periods)."""
    return 2 * len(period_query(query, BASELINE).aggregates)


def judge(
    query: KpiQuery,
    schema: DatasetSchema,
    released: Mapping[str, Sequence[Statistic]],
    target: float,
    confidence: float,
) -> Change:
    """The relative change and verdict from the two periods' released statistics.

    ``met`` when the whole interval is at or above ``target``, ``not_met`` when it is all
    below, ``inconclusive`` when it straddles it (see the module: the interval).
    """
    alpha = (1.0 - confidence) / statistics_count(query)
    base = _kpi_range(query, schema, _period_stats(query, released[BASELINE], alpha))
    then = _kpi_range(query, schema, _period_stats(query, released[EVALUATION], alpha))
    ratio = then[0] / base[0] if base[0] > 0 else math.inf
    ratio_low = then[1] / base[2] if base[2] > 0 else math.inf
    ratio_high = then[2] / base[1] if base[1] > 0 else math.inf
    if query.shape.direction == Direction.UP:
        change, low, high = ratio - 1, ratio_low - 1, ratio_high - 1
    else:
        change, low, high = 1 - ratio, 1 - ratio_high, 1 - ratio_low
    if low >= target:
        verdict = Verdict.MET
    elif high < target:
        verdict = Verdict.NOT_MET
    else:
        verdict = Verdict.INCONCLUSIVE
    return Change(
        baseline=base[0],
        evaluation=then[0],
        change=change if math.isfinite(change) else math.nan,
        interval=(low if math.isfinite(low) else None, high if math.isfinite(high) else None),
        confidence=confidence,
        target=target,
        verdict=verdict,
        direction=query.shape.direction,
    )


def check_terms(target: Any, confidence: Any) -> tuple[float, float]:
    """A contract's target (relative improvement, e.g. 0.05) and confidence level."""
    target = _number(target, "target")
    confidence = _number(confidence, "confidence")
    if not -1 < target <= MAX_TARGET:
        raise KpiError(
            Msg("kpi: target is a relative improvement in (-1, {max}]: e.g. 0.05", max=MAX_TARGET)
        )
    if not MIN_CONFIDENCE <= confidence <= MAX_CONFIDENCE:
        raise KpiError(
            Msg(
                "kpi: confidence must be in [{low}, {high}], e.g. 0.95",
                low=MIN_CONFIDENCE,
                high=MAX_CONFIDENCE,
            )
        )
    return target, confidence
