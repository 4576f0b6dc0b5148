"""How columns become model inputs and targets, using declared metadata only.

The encoding is written into the model card (plain JSON) so ``predict`` can apply it to
new rows exactly as training did.  No statistic is taken from the data: scaling uses the
declared bounds and one-hot columns the declared categories, so the encoding itself
reveals nothing about the rows.

Features
--------
* numeric (integer, float): clamped to the declared ``[lower, upper]`` and scaled to
  ``[0, 1]``; null or NaN becomes 0, the scaled lower bound.
* boolean: 1 for true, 0 for false or null.
* string: only public columns with declared categories, one-hot over those categories
  in declared order; a null or undeclared value is all zeros.  Other strings are refused.

Targets
-------
* classifiers: a boolean (classes ``"false"``, ``"true"``), an integer whose declared
  range holds 2 to ``MAX_CLASSES`` whole numbers (classes ``"lower"`` .. ``"upper"``), or
  a string with 2 to ``MAX_CLASSES`` declared categories.  A row whose target is null or
  outside the declared classes is dropped (row by row, so the DP guarantee is unchanged).
* regressor: a numeric column with finite declared bounds, clamped and scaled to
  ``[0, 1]`` for training; predictions are mapped back to target units, within the bounds.
  A row whose target is null or NaN is dropped.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import polars as pl
import torch

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from analytics.training_spec import CLASSIFIERS, MAX_CLASSES, TrainingError, TrainingSpec
from i18n import Msg

SCALED: Final = "scaled"
BOOLEAN: Final = "boolean"
ONE_HOT: Final = "one_hot"
CLASSES: Final = "classes"
_CLASSIFIER_TARGET: Final = Msg(
    "a classifier needs a boolean target, an integer target whose declared range holds "
    "2 to {max_classes} values, or a string target with 2 to {max_classes} declared categories",
    max_classes=MAX_CLASSES,
)


def declared(schema: DatasetSchema, name: str, role: str) -> ColumnSpec:
    """The declared column ``name``; TrainingError if undeclared or secret."""
    try:
        spec = schema.column(name)
    except KeyError:
        raise TrainingError(
            Msg(
                "column {name} ({role}) is not declared in the dataset",
                name=repr(name),
                role=role,
            )
        ) from None
    if spec.column_class == ColumnClass.SECRET:
        raise TrainingError(
            Msg(
                "column {name} ({role}) is secret: it cannot be used for training",
                name=repr(name),
                role=role,
            )
        )
    return spec


def _bounds(spec: ColumnSpec, role: str) -> tuple[float, float]:
    lower, upper = spec.lower, spec.upper
    if lower is None or upper is None or not (math.isfinite(lower) and math.isfinite(upper)):
        raise TrainingError(
            Msg(
                "column {name} ({role}) needs finite declared bounds",
                name=repr(spec.name),
                role=role,
            )
        )
    if not lower < upper:
        raise TrainingError(
            Msg(
                "column {name} ({role}): declared lower must be below upper",
                name=repr(spec.name),
                role=role,
            )
        )
    return float(lower), float(upper)


def feature_card(schema: DatasetSchema, name: str) -> dict[str, Any]:
    """How feature ``name`` is encoded (a JSON object for the model card)."""
    spec = declared(schema, name, "feature")
    if spec.is_numeric:
        lower, upper = _bounds(spec, "feature")
        return {"name": name, "encoding": SCALED, "lower": lower, "upper": upper}
    if spec.type == ColumnType.BOOLEAN:
        return {"name": name, "encoding": BOOLEAN}
    if spec.column_class == ColumnClass.PUBLIC and spec.categories:
        return {"name": name, "encoding": ONE_HOT, "categories": list(spec.categories)}
    raise TrainingError(
        Msg(
            "column {name} (feature): a string feature must be public with declared categories",
            name=repr(name),
        )
    )


def target_card(schema: DatasetSchema, spec: TrainingSpec) -> dict[str, Any]:
    """How the target is encoded: classes for a classifier, bounds for a regressor."""
    column = declared(schema, spec.target, "target")
    name = spec.target
    if spec.family not in CLASSIFIERS:
        if not column.is_numeric:
            raise TrainingError(
                Msg(
                    "column {name} (target): a regressor needs a numeric target",
                    name=repr(name),
                )
            )
        lower, upper = _bounds(column, "target")
        return {"name": name, "encoding": SCALED, "lower": lower, "upper": upper}
    if column.type == ColumnType.BOOLEAN:
        return {"name": name, "encoding": CLASSES, "source": BOOLEAN, "classes": ["false", "true"]}
    if column.type == ColumnType.INTEGER:
        lower, upper = _bounds(column, "target")
        first, last = math.ceil(lower), math.floor(upper)
        if 2 <= last - first + 1 <= MAX_CLASSES:
            classes = [str(v) for v in range(first, last + 1)]
            return {"name": name, "encoding": CLASSES, "source": "integer", "classes": classes}
    if column.type == ColumnType.STRING and 2 <= len(column.categories or ()) <= MAX_CLASSES:
        classes = list(column.categories or ())
        return {"name": name, "encoding": CLASSES, "source": "string", "classes": classes}
    raise TrainingError(
        Msg(
            "column {name} (target): {classifier_target}",
            name=repr(name),
            classifier_target=_CLASSIFIER_TARGET,
        )
    )


def input_width(features: list[dict[str, Any]]) -> int:
    """The number of model inputs the encoded features take."""
    return sum(len(f["categories"]) if f["encoding"] == ONE_HOT else 1 for f in features)


def output_width(target: dict[str, Any]) -> int:
    """One output per class for a classifier, one for a regressor."""
    return len(target["classes"]) if target["encoding"] == CLASSES else 1


def _require(frame: pl.DataFrame, name: str, role: str) -> pl.Expr:
    if name not in frame.columns:
        raise TrainingError(
            Msg(
                "column {name} ({role}) is missing from the data",
                name=repr(name),
                role=role,
            )
        )
    return pl.col(name)


def _scaled(column: pl.Expr, lower: float, upper: float) -> pl.Expr:
    value = column.cast(pl.Float64).fill_nan(None).clip(lower, upper)
    return (value - lower) / (upper - lower)


def _feature_exprs(frame: pl.DataFrame, card: dict[str, Any]) -> list[pl.Expr]:
    column = _require(frame, card["name"], "feature")
    if card["encoding"] == SCALED:
        return [_scaled(column, card["lower"], card["upper"]).fill_null(0.0)]
    if card["encoding"] == BOOLEAN:
        return [column.cast(pl.Float64).fill_null(0.0)]
    return [(column == c).cast(pl.Float64).fill_null(0.0) for c in card["categories"]]


def encode_features(frame: pl.DataFrame, features: list[dict[str, Any]]) -> torch.Tensor:
    """The float32 input matrix (rows x ``input_width``) of ``frame``."""
    exprs = [e for card in features for e in _feature_exprs(frame, card)]
    try:
        matrix = frame.select(e.alias(f"__x{i}") for i, e in enumerate(exprs)).to_numpy()
    except pl.exceptions.PolarsError:
        raise TrainingError(Msg("a feature column does not hold its declared type")) from None
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))


def target_expr(frame: pl.DataFrame, target: dict[str, Any]) -> pl.Expr:
    """The encoded target: a class index (Int64) or a scaled value; null drops the row."""
    column = _require(frame, target["name"], "target")
    if target["encoding"] == SCALED:
        return _scaled(column, target["lower"], target["upper"])
    classes = target["classes"]
    if target["source"] == BOOLEAN:
        return column.cast(pl.Int64)
    if target["source"] == "integer":
        first, last = int(classes[0]), int(classes[-1])
        value = column.cast(pl.Float64)
        whole = value.is_between(first, last) & (value == value.floor())
        return pl.when(whole).then((value - first).cast(pl.Int64)).otherwise(None)
    index = {c: i for i, c in enumerate(classes)}
    return column.cast(pl.String).replace_strict(index, default=None, return_dtype=pl.Int64)


def target_tensor(values: pl.Series, target: dict[str, Any]) -> torch.Tensor:
    """Class indices as int64, or scaled values as float32 (no nulls left)."""
    if target["encoding"] == CLASSES:
        return torch.from_numpy(values.cast(pl.Int64).to_numpy().astype(np.int64))
    return torch.from_numpy(values.cast(pl.Float64).to_numpy().astype(np.float32))


def predicted_index(outputs: torch.Tensor) -> torch.Tensor:
    """A classifier's class index per row: the largest logit."""
    return outputs.argmax(dim=1)


def predicted_value(outputs: torch.Tensor, target: dict[str, Any]) -> torch.Tensor:
    """A regressor's prediction in target units, within the declared bounds."""
    lower, upper = float(target["lower"]), float(target["upper"])
    return lower + outputs.reshape(-1).clamp(0.0, 1.0).double() * (upper - lower)


def decode(outputs: torch.Tensor, target: dict[str, Any]) -> list[float] | list[str]:
    """Model outputs as class labels (classifier) or numbers in target units (regressor)."""
    if target["encoding"] == CLASSES:
        classes: list[str] = list(target["classes"])
        return [classes[i] for i in predicted_index(outputs).tolist()]
    return [float(v) for v in predicted_value(outputs, target).tolist()]
