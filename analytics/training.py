"""Tier 4: private model training with DP-SGD (Opacus), metrics released with OpenDP.

A provider never sees rows: it gets model weights (safetensors), a model card (JSON) and
DP metrics measured on held-out rows.  Everything released is
``(epsilon, delta)``-differentially private for one row (add or remove one row).

How a model is made private
---------------------------
* **Budget split.** ``epsilon_metrics = epsilon x metrics_epsilon_share`` pays for the
  held-out metrics; ``epsilon_training`` is the rest (rounded down by an ulp where
  needed so the two always add up to at most ``epsilon`` in floating point).  Basic
  composition: the released total is the accountant's epsilon for training plus
  OpenDP's charged epsilon for the metrics, never above ``epsilon``.  ``delta`` is all
  DP-SGD's (Opacus needs delta > 0 and below ``1/rows_public``); the metrics use none.
* **Public sampling.** DP-SGD samples each training row into a batch independently with
  probability ``q = batch_size / (rows_public x (1 - holdout_fraction))``, where
  ``rows_public`` is a public, rounded row count (tier-0 information) given by the
  caller, never the private count, so the denominator is the public size of the
  training split; ``analytics.training_batches`` draws the Poisson batches at that
  explicit rate (the law of Opacus' ``UniformWithReplacementSampler``, drawn from the
  gaps between selections).  An epoch is ``floor(1/q)`` batches (Opacus' sampler's
  own count), so the run is ``steps = epochs x floor(1/q)`` steps, and the noise
  multiplier, which the card shows, is a function of public values only: Opacus'
  ``get_noise_multiplier(target_epsilon=epsilon_training, target_delta=delta,
  sample_rate=q, steps=steps, accountant="prv")``.  The noisy gradient sum is divided
  by the public expected batch, ``batch_size``.  The guarantee rests on q alone: if the
  true count differs from ``rows_public``, batches are just larger or smaller than
  ``batch_size`` on average.  ``epsilon`` is at most 20
  (``training_spec.MAX_EPSILON``) and a run at most ``training_spec.MAX_STEPS`` steps.
* **Accounting.** Opacus' PRV accountant (``ACCOUNTANT``) for the preview and the run:
  it records every step at rate ``q`` and reports its certified upper bound on epsilon,
  which is what the card's ``epsilon_training`` shows (at most the target).
* **Clipping.** ``max_grad_norm`` bounds each row's gradient (flat clipping, Opacus'
  ghost clipping, ``GRAD_SAMPLE_MODE``).  Noise, sampling and clipping all come from
  Opacus; initial weights are fixed by ``seed`` (public), while the Poisson draws and
  the noise come from generators seeded with fresh OS entropy, never from ``seed``.
* **secure_mode.** Passed to ``PrivacyEngine(secure_mode=...)``: Opacus then draws from
  torchcsprng and hardens the Gaussian against floating-point attacks.  torchcsprng is
  not installed here, so ``secure_mode=True`` raises TrainingError.  Without it the
  noise comes from torch's Mersenne Twister seeded from the OS: unpredictable, but not a
  cryptographic generator.
* **Held-out metrics.** Rows are split before training by a hash of each row's used
  columns keyed with ``seed`` (polars ``hash_rows``): deterministic, and each row's side
  depends on that row alone, so one row more or less changes each side by at most one
  row (polars' hash is stable for a given polars version).  ``holdout_fraction`` of the
  rows are held out; the model trains on the rest.
  Classifiers release accuracy, the OpenDP mean of a 0/1 ``correct`` column;
  regressors release the mean absolute error in target units, clipped to the target's
  declared range (``run_private_query``: its value, ``ci95`` and ``noise_scale``).
* **Rows.** Feature and target encodings use declared metadata only (see
  ``analytics.training_encoding``): null features become the scaled lower bound 0,
  rows with a null (or undeclared) target are dropped.  An id privacy unit with more
  than one row per id is refused; with one row per id, only each id's first row is used.
* **Not covered.** ``on_epoch``'s mean training loss is computed from private rows
  without noise: it is for the operator's progress display and must not reach a
  provider.  Cancelling (``should_stop``) releases nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Final

import polars as pl
import safetensors
import safetensors.torch
import torch
from torch import nn

from analytics.schema import DatasetSchema
from analytics.training_document import parse_training, training_json_schema
from analytics.training_encoding import (
    decode,
    encode_features,
    feature_card,
    input_width,
    output_width,
    target_card,
    target_expr,
    target_tensor,
)
from analytics.training_metrics import release_metric
from analytics.training_sgd import (
    ACCOUNTANT,
    GRAD_SAMPLE_MODE,
    Callbacks,
    Rows,
    SgdPlan,
    build_model,
    fit_private,
    initial_model,
    sgd_plan,
    tensors,
    threads,
)
from analytics.training_spec import (
    CLASSIFIERS,
    ModelFamily,
    TrainingCancelled,
    TrainingError,
    TrainingSpec,
    check_values,
)
from i18n import Msg

__all__ = [
    "ModelFamily",
    "TrainedModel",
    "TrainingCancelled",
    "TrainingError",
    "TrainingPreview",
    "TrainingSpec",
    "load_model",
    "parse_training",
    "predict",
    "preview_training",
    "train_model",
    "training_json_schema",
    "validate_training",
]

CARD_FORMAT: Final = "veil-model-card/1"
_TARGET: Final = "__veil_target"  # the encoded target, beside the frame's own columns
_HASH_SCALE: Final = 2.0**64  # polars' row hashes are uniform 64-bit integers


@dataclass(frozen=True)
class TrainingPreview:
    """What a training run would spend and use, computed from public values only."""

    epsilon: float
    delta: float
    epsilon_training: float
    epsilon_metrics: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class TrainedModel:
    """A released model: safetensors weights, its JSON card, and the privacy spent."""

    weights: bytes
    card: dict[str, Any]
    epsilon: float
    delta: float


# ---------------------------------------------------------------- checks and preview


def validate_training(schema: DatasetSchema, spec: TrainingSpec) -> None:
    """Raise TrainingError unless ``schema`` can serve ``spec`` (values, columns, unit)."""
    check_values(spec)
    unit = schema.privacy_unit
    if unit.id_column is not None:
        if unit.id_column not in schema.names:
            raise TrainingError(
                Msg(
                    "column {id_column} (privacy unit id) is not declared",
                    id_column=repr(unit.id_column),
                )
            )
        if unit.max_rows_per_id > 1:
            raise TrainingError(
                Msg(
                    "tier-4 training protects single rows; this dataset's privacy "
                    "unit is an id with up to {max_rows_per_id} rows",
                    max_rows_per_id=unit.max_rows_per_id,
                )
            )
        if unit.max_rows_per_id < 1:
            raise TrainingError(
                Msg(
                    "column {id_column} (privacy unit id): max_rows_per_id < 1",
                    id_column=repr(unit.id_column),
                )
            )
    for name in spec.features:
        feature_card(schema, name)
    target_card(schema, spec)


def _split_budget(spec: TrainingSpec) -> tuple[float, float]:
    """(epsilon_training, epsilon_metrics), adding up to at most spec.epsilon in floats."""
    metrics = spec.epsilon * spec.metrics_epsilon_share
    training = spec.epsilon - metrics
    while training + metrics > spec.epsilon:
        training = math.nextafter(training, 0.0)
    return training, metrics


def _check_rows_public(spec: TrainingSpec, rows_public: int) -> None:
    if isinstance(rows_public, bool) or not isinstance(rows_public, int) or rows_public < 1:
        raise TrainingError(Msg("rows_public: expected a positive integer (the public row count)"))
    if not spec.delta < 1.0 / rows_public:
        raise TrainingError(Msg("delta must be below 1/n (n = rows_public, the public row count)"))


def _plan(
    schema: DatasetSchema, spec: TrainingSpec, rows_public: int
) -> tuple[SgdPlan, float, float]:
    validate_training(schema, spec)
    _check_rows_public(spec, rows_public)
    eps_training, eps_metrics = _split_budget(spec)
    return sgd_plan(spec, rows_public, eps_training), eps_training, eps_metrics


def preview_training(
    schema: DatasetSchema, spec: TrainingSpec, rows_public: int
) -> TrainingPreview:
    """The budget split, noise multiplier, sample rate and steps of ``spec``; spends
    nothing and reads no data.  Training with the same arguments uses exactly these."""
    plan, eps_training, eps_metrics = _plan(schema, spec, rows_public)
    notes = (
        f"DP-SGD (Opacus, {ACCOUNTANT} accountant): each training row joins a batch with "
        f"probability q = batch_size / (rows_public x (1 - holdout_fraction)); {plan.steps} steps "
        f"({spec.epochs} epochs of {plan.steps_per_epoch})",
        f"held-out metric ({'accuracy' if spec.family in CLASSIFIERS else 'mean absolute error'}"
        f") released with OpenDP at epsilon {eps_metrics:.6g}",
        "null features count as the lower bound; rows with a null target are dropped",
    )
    return TrainingPreview(
        epsilon=spec.epsilon,
        delta=spec.delta,
        epsilon_training=eps_training,
        epsilon_metrics=eps_metrics,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        notes=notes,
    )


# ---------------------------------------------------------------- data


def _rows(
    frame: pl.DataFrame, schema: DatasetSchema, spec: TrainingSpec, card: dict[str, Any]
) -> tuple[Rows, Rows]:
    """(training rows, held-out rows), encoded; see the module docstring."""
    unit = schema.privacy_unit
    if unit.id_column is not None:  # one row per id: keep each id's first row
        if unit.id_column not in frame.columns:
            raise TrainingError(
                Msg(
                    "column {id_column} (privacy unit id) is missing from the data",
                    id_column=repr(unit.id_column),
                )
            )
        frame = frame.unique(subset=[unit.id_column], keep="first", maintain_order=True)
    used = [*spec.features, spec.target]
    for name in used:
        if name not in frame.columns:
            role = "target" if name == spec.target else "feature"
            raise TrainingError(
                Msg(
                    "column {name} ({role}) is missing from the data",
                    name=repr(name),
                    role=role,
                )
            )
    target = card["target"]
    try:
        frame = frame.with_columns(target_expr(frame, target).alias(_TARGET)).drop_nulls(_TARGET)
    except pl.exceptions.PolarsError:
        raise TrainingError(Msg("the target column does not hold its declared type")) from None
    score = frame.select(used).hash_rows(seed=spec.seed).cast(pl.Float64) / _HASH_SCALE
    held = score < spec.holdout_fraction
    parts = []
    for part in (frame.filter(~held), frame.filter(held)):
        x = encode_features(part, card["features"])
        parts.append(Rows(x, target_tensor(part.get_column(_TARGET), target)))
    return parts[0], parts[1]


# ---------------------------------------------------------------- training


def _model_card(schema: DatasetSchema, spec: TrainingSpec, rows_public: int) -> dict[str, Any]:
    """The architecture, encodings and settings: everything but the results."""
    features = [feature_card(schema, name) for name in spec.features]
    target = target_card(schema, spec)
    return {
        "format": CARD_FORMAT,
        "family": str(spec.family),
        "inputs": input_width(features),
        "hidden_sizes": list(spec.hidden_sizes),
        "outputs": output_width(target),
        "features": features,
        "target": target,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "max_grad_norm": spec.max_grad_norm,
        "holdout_fraction": spec.holdout_fraction,
        "seed": spec.seed,
        "rows_public": rows_public,
    }


def _results(
    spec: TrainingSpec, plan: SgdPlan, spent: float, metric: dict[str, Any], secure_mode: bool
) -> dict[str, Any]:
    """The card's privacy accounting, metric and provenance."""
    total = spent + float(metric["epsilon"])
    return {
        "noise_multiplier": plan.noise_multiplier,
        "sample_rate": plan.sample_rate,
        "steps": plan.steps,
        "expected_batch_size": plan.expected_batch,
        "epsilon": total,
        "epsilon_requested": spec.epsilon,
        "epsilon_training": spent,
        "epsilon_metrics": float(metric["epsilon"]),
        "delta": spec.delta,
        "accountant": ACCOUNTANT,
        "grad_sample_mode": GRAD_SAMPLE_MODE,
        "secure_mode": secure_mode,
        "metrics": metric,
        "torch_version": torch.__version__,
        "opacus_version": version("opacus"),
        "opendp_version": version("opendp"),
        "guarantee": (
            f"({total:.6g}, {spec.delta:g})-differential privacy for any single row of the "
            f"dataset: DP-SGD (Opacus, {ACCOUNTANT} accountant, epsilon {spent:.6g}) for the "
            f"weights plus OpenDP (epsilon {metric['epsilon']:.6g}) for the held-out metric, "
            "by basic composition; it covers the weights, this card and any prediction made "
            "with them"
        ),
        "notes": [
            "features are scaled by declared bounds, null features count as the lower bound",
            "rows with a null or undeclared target were dropped",
            "noise and Poisson sampling from "
            + (
                "torchcsprng (secure_mode)"
                if secure_mode
                else "torch generators seeded from OS entropy"
            ),
        ],
    }


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train_model(
    frame: pl.DataFrame,
    schema: DatasetSchema,
    spec: TrainingSpec,
    rows_public: int,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    secure_mode: bool = False,
) -> TrainedModel:
    """Train ``spec``'s model on ``frame`` with DP-SGD and release it with its DP metric.

    ``rows_public`` is the public (rounded) row count that sets the sampling rate.
    ``on_epoch(epoch, mean_training_loss)`` is called after each epoch; that loss is NOT
    private (operator progress only).  ``should_stop()`` is checked before every batch;
    True raises TrainingCancelled and releases nothing.  ``secure_mode`` is Opacus'
    (needs torchcsprng; TrainingError without it).  The returned epsilon is what the
    accountants spent, at most ``spec.epsilon``; delta is ``spec.delta``.
    """
    plan, eps_training, eps_metrics = _plan(schema, spec, rows_public)
    card = _model_card(schema, spec, rows_public)
    train, held = _rows(frame, schema, spec, card)
    if len(train) == 0:
        raise TrainingError(
            Msg("no training rows: every row lacks a usable target or was held out")
        )
    model = initial_model(
        spec.family, card["inputs"], spec.hidden_sizes, card["outputs"], spec.seed
    )
    with threads():
        callbacks = Callbacks(on_epoch, should_stop)
        spent = fit_private(model, train, spec, plan, callbacks, secure_mode)
        if not _finite(model):  # a function of the DP weights only: revealing it is safe
            raise TrainingError(Msg("training diverged (non-finite weights): lower learning_rate"))
        metric, charged = release_metric(model, held, card["target"], eps_metrics)
    if not (spent <= eps_training and charged <= eps_metrics):  # pragma: no cover
        raise RuntimeError("an accountant spent more than planned")
    card.update(_results(spec, plan, spent, metric, secure_mode))
    weights = safetensors.torch.save(tensors(model), metadata={"format": "pt", "card": CARD_FORMAT})
    return TrainedModel(weights=weights, card=card, epsilon=spent + charged, delta=spec.delta)


# ---------------------------------------------------------------- using a model


def load_model(weights: bytes, card: dict[str, Any]) -> nn.Module:
    """Rebuild the card's architecture, load the safetensors ``weights``; eval mode."""
    try:
        family = ModelFamily(card["family"])
        hidden = tuple(int(units) for units in card["hidden_sizes"])
        model = build_model(family, int(card["inputs"]), hidden, int(card["outputs"]))
    except (KeyError, TypeError, ValueError):
        raise TrainingError(
            Msg("card: not a Veil model card (family, inputs, hidden_sizes, outputs)")
        ) from None
    try:
        model.load_state_dict(safetensors.torch.load(weights), strict=True)
    except (safetensors.SafetensorError, RuntimeError):
        raise TrainingError(
            Msg("weights: not safetensors weights of the card's architecture")
        ) from None
    return model.eval()


def predict(model: nn.Module, card: dict[str, Any], frame: pl.DataFrame) -> list[float] | list[str]:
    """Predictions for ``frame``'s rows with the card's encoding: class labels (strings)
    for classifiers, numbers in target units for regressors."""
    x = encode_features(frame, card["features"])
    with torch.no_grad():
        outputs = model(x)
    return decode(outputs, card["target"])
