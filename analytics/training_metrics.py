"""The held-out metric of a trained model, released with OpenDP.

Classifiers: accuracy, the DP mean of a 0/1 ``correct`` column (bounds 0..1).
Regressors: mean absolute error in target units, each error clipped to the width of the
target's declared range (the bounds OpenDP clamps to), so its noise grows with that
width.  Both go through ``run_private_query`` at the metrics' share of epsilon, with no
delta; OpenDP's charged epsilon is what the model card adds to the training epsilon.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import torch
from torch import nn

from analytics.dp_catalog import QueryError
from analytics.private_query import run_private_query
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivateQuery,
)
from analytics.training_encoding import CLASSES, predicted_index, predicted_value
from analytics.training_sgd import Rows
from analytics.training_spec import TrainingError
from i18n import Msg


def _metric_frame(
    model: nn.Module, held: Rows, target: dict[str, Any]
) -> tuple[str, ColumnSpec, pl.DataFrame]:
    with torch.no_grad():
        outputs = model(held.x)
    if target["encoding"] == CLASSES:
        correct = (predicted_index(outputs) == held.y).to(torch.int64).numpy()
        spec = ColumnSpec("correct", ColumnType.INTEGER, ColumnClass.CONFIDENTIAL, 0.0, 1.0)
        return "accuracy", spec, pl.DataFrame({"correct": correct})
    lower, upper = float(target["lower"]), float(target["upper"])
    truth = lower + held.y.double() * (upper - lower)  # the clamped target, in its units
    error = (predicted_value(outputs, target) - truth).abs().clamp(0.0, upper - lower)
    spec = ColumnSpec("abs_error", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, 0.0, upper - lower)
    return "mean_absolute_error", spec, pl.DataFrame({"abs_error": error.numpy()})


def release_metric(
    model: nn.Module, held: Rows, target: dict[str, Any], epsilon: float
) -> tuple[dict[str, Any], float]:
    """The held-out metric as OpenDP releases it, and the epsilon OpenDP charged."""
    name, column, frame = _metric_frame(model, held, target)
    query = PrivateQuery((Aggregate(AggregateKind.MEAN, column.name),))
    try:
        release = run_private_query(frame, DatasetSchema((column,)), query, epsilon, 0.0)
    except QueryError as error:  # pragma: no cover - the query is fixed and valid
        raise TrainingError(
            Msg(
                "held-out metric: {problem}",
                problem=error.args[0] if error.args else str(error),
            )
        ) from None
    value = release.rows[0].values[0]
    metric = {
        "name": name,
        "value": value.value,
        "ci95": list(value.ci95),
        "noise_scale": value.noise_scale,
        "epsilon": release.epsilon,
        "mechanism": f"OpenDP mean of {column.name} over held-out rows, clamped to "
        f"[{column.lower:g}, {column.upper:g}]",
    }
    return metric, release.epsilon
