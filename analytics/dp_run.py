"""Running a private query's OpenDP plans, and reading OpenDP's accounting and accuracy.

``analytics.private_query`` documents the budget split and what the numbers mean; here
the plans of ``analytics.dp_plans`` run (or, for a preview, are only sized) inside one
OpenDP context that holds the whole budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import opendp.prelude as dp
import polars as pl
from opendp.mod import Measurement, OpenDPException

from analytics import dp_plans, dp_scratch
from analytics.dp_catalog import QueryError, needs_key_selection, quantile_level, validate_query
from analytics.dp_plans import Calibrated, Plans, epsilon_of
from analytics.schema import Aggregate, AggregateKind, DatasetSchema, PrivateQuery
from i18n import Msg

ALPHA: Final = 0.05


def check_budget(epsilon: float, delta: float, key_selection: bool) -> None:
    """Raise QueryError unless (epsilon, delta) is a budget this query can use."""
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise QueryError(Msg("epsilon must be a finite number greater than 0"))
    if not (isinstance(delta, int | float) and 0 <= delta < 1):
        raise QueryError(Msg("delta must be a number in [0, 1)"))
    if key_selection and delta == 0:
        raise QueryError(
            Msg(
                "group_by on columns without declared public categories needs DP "
                "key selection, which needs a delta > 0 (e.g. 1e-6)"
            )
        )


@dataclass(frozen=True)
class Outcome:
    """What OpenDP ran (or, in a preview, would run), and the loss it accounted."""

    context: Any
    steps: tuple[Calibrated, ...]
    frames: tuple[pl.DataFrame, ...]  # one per step; none in a preview
    epsilon: float
    delta: float
    keys: pl.DataFrame | None  # the keys of the value plans; None when ungrouped
    reused: int | None  # the aggregate that the key plan's count answers


def _public(
    data: pl.LazyFrame, schema: DatasetSchema, query: PrivateQuery, epsilon: float, run: bool
) -> Outcome:
    """Public keys: the plans under one compositor, split by their sensitivities."""
    loss = dp.loss_of(epsilon=float(epsilon))
    keys = dp_plans.grouped_keys(schema, query)
    probe = Plans(dp_plans.open_context(data, schema, query, loss, [1.0]), schema, query)
    plans = probe.value_plans(keys, None)
    weights = [probe.loss_at_one(plan) for plan in plans]
    builder = probe
    if len(plans) > 1:
        context = dp_plans.open_context(data, schema, query, loss, weights)
        builder = Plans(context, schema, query)
    context = builder.context
    steps, frames = [], []
    for plan, d_mid in zip(plans, list(context.d_mids), strict=True):
        steps.append(builder.fit(plan, d_mid, partial(_within, context.d_in, d_mid)))
        if run:
            frames.append(context(steps[-1].measurement).collect())
    spent = float(context.accountant.map(context.d_in))
    return Outcome(context, tuple(steps), tuple(frames), spent, 0.0, keys, None)


def _within(d_in: Any, d_out: Any, measurement: Measurement) -> bool:
    return dp_plans.within(measurement, d_in, d_out)


def _jointly_within(
    steps: list[Calibrated], d_in: Any, d_out: Any, measurement: Measurement
) -> bool:
    together = dp_plans.joint([*steps, Calibrated(measurement, 0.0)])
    return dp_plans.within(together, d_in, d_out)


def _reused_count(query: PrivateQuery) -> int | None:
    plain = [i for i, a in enumerate(query.aggregates) if a == Aggregate(AggregateKind.COUNT)]
    return plain[0] if plain else None


def _private(
    data: pl.LazyFrame,
    schema: DatasetSchema,
    query: PrivateQuery,
    budget: tuple[float, float],
    run: bool,
) -> Outcome:
    """Private keys: the key plan first, then the other plans on the released keys.

    Epsilon is shared in proportion to each plan's sensitivity (sized on placeholder
    keys: noise does not depend on which keys), all of delta goes to the key plan.
    """
    epsilon, delta = budget
    loss = dp.loss_of(epsilon=epsilon, delta=delta)
    plans = Plans(dp_plans.open_context(data, schema, query, loss, None), schema, query)
    context, reused, key_plan = plans.context, _reused_count(query), plans.key_plan()
    keys = dp_plans.placeholder_keys(schema, query)
    value_plans = plans.value_plans(keys, reused)
    losses = [plans.loss_at_one(plan) for plan in value_plans]
    key_loss = plans.loss_at_one(key_plan, dp_plans.THRESHOLD_MAX)
    steps = [plans.fit_keys(key_plan, epsilon * key_loss / (key_loss + sum(losses)), delta)]
    frames = []
    if run:
        frames.append(context(steps[0].measurement).collect())
        keys = dp_plans.selected_keys(frames[0], query, dp_plans.key_cap(schema, query))
        value_plans = plans.value_plans(keys, reused) if keys.height else []
    for index, plan in enumerate(value_plans):
        # The rest of epsilon, shared by the remaining plans in proportion to their losses.
        spent = epsilon_of(dp_plans.joint(steps).map(context.d_in))  # type: ignore[no-untyped-call]
        share = (epsilon - spent) * losses[index] / sum(losses[index:])
        steps.append(plans.fit(plan, share, partial(_jointly_within, steps, context.d_in, budget)))
        if run:
            frames.append(context(steps[-1].measurement).collect())
    total = context.current_privacy_loss() if run else _joint_loss(steps, context.d_in)
    return Outcome(context, tuple(steps), tuple(frames), total[0], total[1], keys, reused)


def _joint_loss(steps: list[Calibrated], d_in: Any) -> tuple[float, float]:
    epsilon, delta = dp_plans.joint(steps).map(d_in)  # type: ignore[no-untyped-call]
    return float(epsilon), float(delta)


def outcome(
    frame: pl.DataFrame | pl.LazyFrame,
    schema: DatasetSchema,
    query: PrivateQuery,
    budget: tuple[float, float],
    run: bool,
    scratch: Path | None = None,
) -> Outcome:
    """Validate, then run the query's plans (``run``) or only calibrate them (a preview).

    ``scratch``: a directory in memory for the rows while the plans run (``dp_scratch``).
    """
    validate_query(schema, query)
    key_selection = needs_key_selection(schema, query)
    check_budget(budget[0], budget[1], key_selection)
    dp.enable_features("contrib")
    prepared = dp_plans.prepare(frame, schema, query)
    try:
        with dp_scratch.scanned(prepared, scratch if run else None) as data:
            if key_selection:
                return _private(data, schema, query, (float(budget[0]), float(budget[1])), run)
            return _public(data, schema, query, budget[0], run)
    except OpenDPException as error:
        raise QueryError(
            Msg(
                "OpenDP cannot make this query private: {message}",
                message=error.message,
            )
        ) from None


@dataclass(frozen=True)
class Noise:
    """What OpenDP says about one noisy column: its scale and its accuracy at two alphas.

    For a quantile, which has no accuracy, ``scale`` is the plan's global scale.
    """

    scale: float
    accuracy: float  # at ALPHA
    half_accuracy: float  # at ALPHA / 2, for intervals built from two noisy columns


def accuracy_by_alias(steps: tuple[Calibrated, ...]) -> dict[str, Noise]:
    """OpenDP's scale and accuracy of every noisy column, by alias."""
    noise = {}
    for step in steps:
        full = dp.summarize_polars_measurement(step.measurement, alpha=ALPHA)
        half = dp.summarize_polars_measurement(step.measurement, alpha=ALPHA / 2)
        for row, half_row in zip(
            full.iter_rows(named=True), half.iter_rows(named=True), strict=True
        ):
            if row["accuracy"] is None:  # the exponential mechanism: see "Quantiles"
                noise[str(row["column"])] = Noise(step.scale, math.nan, math.nan)
            else:
                accuracy = float(row["accuracy"])
                noise[str(row["column"])] = Noise(
                    float(row["scale"]), accuracy, float(half_row["accuracy"])
                )
    return noise


def rank_scale(aggregate: Aggregate, global_scale: float) -> float:
    """A quantile's exponential-mechanism scale in rows of rank (see private_query).

    OpenDP scores a candidate by ``|(d - n) * #below - n * #above|`` for ``q = n / d``,
    with noise of scale ``global_scale * max(n, d - n)``; one row of rank moves the score
    by ``d``, so in rows the scale is ``global_scale * max(q, 1 - q)``.
    """
    q = quantile_level(aggregate)
    return global_scale * max(q, 1 - q)


def preload() -> None:
    """Import now what OpenDP imports only when a query first returns its frames: its
    Arrow conversion (``opendp._data``) loads pyarrow and ``pyarrow.compute``, whose import
    scrapes docstrings: about 60 ms of CPU.  The job sandbox's warm worker calls this before
    it forks each job's process, so that no job pays it again.  Imports only: nothing runs,
    and no thread pool starts (forking stays safe)."""
    import opendp._data  # noqa: F401
    import pyarrow.compute  # type: ignore[import-untyped]
    import pyarrow.ipc  # type: ignore[import-untyped]  # noqa: F401
