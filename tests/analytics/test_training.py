"""Tier-4 DP training: learning, exact accounting, the model card, round trips, refusals.

The data: a reproducible predictive-maintenance frame (numpy Generator(seed)) where a
machine fails when temperature and vibration are both high (base rate about 0.5, Bayes
accuracy about 0.9) and the remaining life falls with both.  Thresholds: at epsilon = 1
(delta 1e-5, 5 000 rows), classifiers must reach accuracy > 0.75 both as released (DP,
held-out rows) and on a fresh frame; the regressor's mean absolute error on a fresh frame
must be under half that of always predicting the middle of the declared bounds.
A fifth of epsilon pays for the released metric (about 1 000 held-out rows), so its
noise stays well inside those margins.
"""

from __future__ import annotations

import json
import math
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import safetensors.torch
import torch
from opacus.accountants import create_accountant

from analytics import training
from analytics.schema import (
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivacyUnit,
)
from analytics.training import (
    ModelFamily,
    TrainedModel,
    TrainingCancelled,
    TrainingError,
    TrainingSpec,
    load_model,
    parse_training,
    predict,
    preview_training,
    train_model,
    training_json_schema,
    validate_training,
)
from analytics.training_encoding import encode_features, feature_card

ROWS = 5_000
LINES = ("north", "south", "east")
FEATURES = ("temperature_c", "vibration_mm_s", "line")
SECRET_VALUE = "alice-7f3a-payroll"  # a data value that must never appear in an error
F, INT, S, B = ColumnType.FLOAT, ColumnType.INTEGER, ColumnType.STRING, ColumnType.BOOLEAN
PUBLIC, INTERNAL = ColumnClass.PUBLIC, ColumnClass.INTERNAL
CONFIDENTIAL, SECRET = ColumnClass.CONFIDENTIAL, ColumnClass.SECRET
COLUMNS = (
    ColumnSpec("temperature_c", F, CONFIDENTIAL, 0.0, 150.0, nullable=True),
    ColumnSpec("vibration_mm_s", F, INTERNAL, 0.0, 20.0),
    ColumnSpec("line", S, PUBLIC, categories=LINES),
    ColumnSpec("failure", B, INTERNAL),
    ColumnSpec("life_h", F, CONFIDENTIAL, 0.0, 1000.0),
    ColumnSpec("risk", S, CONFIDENTIAL, categories=("low", "high")),
    ColumnSpec("defects", INT, INTERNAL, 0.0, 3.0),
    ColumnSpec("notes", S, INTERNAL),
    ColumnSpec("operator", S, SECRET),
)
SCHEMA = DatasetSchema(COLUMNS)


def maintenance(rows: int, seed: int) -> pl.DataFrame:
    """Sensor readings with a clear signal; the same seed gives the same frame."""
    rng = np.random.default_rng(seed)
    temp, vib = rng.uniform(20, 120, rows), rng.uniform(0, 15, rows)
    score = (temp - 70) / 25 + (vib - 7.5) / 3.75 + rng.normal(0, 0.5, rows)
    life = np.clip(1000 - 5 * temp - 20 * vib + rng.normal(0, 30, rows), 0, 1000)
    return pl.DataFrame(
        {
            "temperature_c": temp,
            "vibration_mm_s": vib,
            "line": rng.choice(LINES, rows),
            "failure": score > 0,
            "life_h": life,
            "risk": np.where(score > 0, "high", "low"),
            "defects": rng.integers(0, 4, rows),
            "notes": rng.choice(["ok", "check"], rows),
            "operator": [SECRET_VALUE] * rows,
        }
    )


def spec(family: str = "logistic_regression", target: str = "failure", **kw: Any) -> TrainingSpec:
    hidden = () if family == "logistic_regression" else (32,)
    values: dict[str, Any] = {
        "epsilon": 1.0, "delta": 1e-5, "hidden_sizes": hidden, "learning_rate": 0.5,
        "metrics_epsilon_share": 0.2, **kw,
    }  # fmt: skip
    return TrainingSpec(ModelFamily(family), FEATURES, target, **values)


@dataclass
class Run:
    """One training run, the model object it held in memory, and its callbacks."""

    spec: TrainingSpec
    result: TrainedModel
    model: torch.nn.Module
    epochs: list[tuple[int, float]] = field(default_factory=list)


def run(family: str, target: str, frame: pl.DataFrame, **kw: Any) -> Run:
    captured: list[torch.nn.Module] = []
    real = training.tensors

    def spy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        captured.append(model)  # the trained in-process model, as train_model saves it
        return real(model)

    epochs: list[tuple[int, float]] = []
    s = spec(family, target, **kw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "tensors", spy)
        result = train_model(frame, SCHEMA, s, ROWS, on_epoch=lambda e, x: epochs.append((e, x)))
    return Run(s, result, captured[0], epochs)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return maintenance(ROWS, seed=1)


@pytest.fixture(scope="module")
def fresh() -> pl.DataFrame:
    return maintenance(ROWS, seed=2)


@pytest.fixture(scope="module")
def logistic(frame: pl.DataFrame) -> Run:
    return run("logistic_regression", "failure", frame)


@pytest.fixture(scope="module")
def mlp(frame: pl.DataFrame) -> Run:
    return run("mlp_classifier", "risk", frame)


@pytest.fixture(scope="module")
def regressor(frame: pl.DataFrame) -> Run:
    # Squared error on a [0, 1] target: a smaller step and clip than the classifiers'.
    return run("mlp_regressor", "life_h", frame, learning_rate=0.2, epochs=10, max_grad_norm=0.3)


@pytest.fixture(params=["logistic", "mlp", "regressor"])
def any_run(request: pytest.FixtureRequest) -> Iterator[Run]:
    yield request.getfixturevalue(request.param)


def accuracy(predicted: list[Any], truth: list[Any]) -> float:
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


# ---------------------------------------------------------------- learning


def test_logistic_regression_learns_the_signal(logistic: Run, fresh: pl.DataFrame) -> None:
    truth = ["true" if v else "false" for v in fresh["failure"]]
    assert 0.4 < truth.count("true") / len(truth) < 0.6  # chance is about 0.5
    model = load_model(logistic.result.weights, logistic.result.card)
    assert accuracy(predict(model, logistic.result.card, fresh), truth) > 0.75
    metric = logistic.result.card["metrics"]
    assert metric["name"] == "accuracy" and metric["value"] > 0.75
    assert metric["ci95"][0] <= metric["value"] <= metric["ci95"][1] and metric["noise_scale"] > 0


def test_mlp_classifier_learns_a_string_target(mlp: Run, fresh: pl.DataFrame) -> None:
    assert mlp.result.card["target"]["classes"] == ["low", "high"]
    predicted = predict(load_model(mlp.result.weights, mlp.result.card), mlp.result.card, fresh)
    assert accuracy(predicted, fresh["risk"].to_list()) > 0.75
    assert mlp.result.card["metrics"]["value"] > 0.75


def test_regressor_beats_the_middle_of_the_bounds(regressor: Run, fresh: pl.DataFrame) -> None:
    card = regressor.result.card
    predicted = predict(load_model(regressor.result.weights, card), card, fresh)
    truth = fresh["life_h"].to_numpy()
    assert all(isinstance(v, float) and 0.0 <= v <= 1000.0 for v in predicted)
    model_mae = float(np.mean(np.abs(np.asarray(predicted) - truth)))
    middle_mae = float(np.mean(np.abs(500.0 - truth)))
    assert model_mae < 0.5 * middle_mae
    # The released MAE is in hours, clipped to the target's declared range (so noisy).
    assert card["metrics"]["name"] == "mean_absolute_error"
    assert 0.0 <= card["metrics"]["value"] <= 1000.0


# ---------------------------------------------------------------- accounting


def test_accounting_is_exact_and_within_budget(any_run: Run) -> None:
    s, card, result = any_run.spec, any_run.result.card, any_run.result
    preview = preview_training(SCHEMA, s, ROWS)
    assert card["epsilon_training"] <= preview.epsilon_training
    assert card["epsilon_metrics"] == preview.epsilon_metrics == s.epsilon * s.metrics_epsilon_share
    assert card["metrics"]["epsilon"] == card["epsilon_metrics"]
    assert card["epsilon"] == card["epsilon_training"] + card["epsilon_metrics"] == result.epsilon
    assert result.epsilon <= s.epsilon and preview.epsilon_training + preview.epsilon_metrics <= 1
    assert result.delta == card["delta"] == s.delta
    # A fresh accountant fed the public plan gives the same epsilon: every step was
    # accounted at the public rate q, and nothing else was.
    accountant = create_accountant(card["accountant"])
    accountant.history = [(card["noise_multiplier"], card["sample_rate"], card["steps"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PRV domain bound's RDP "largest alpha" note
        assert accountant.get_epsilon(s.delta) == card["epsilon_training"]


def test_preview_matches_training_and_ignores_the_exact_row_count(
    logistic: Run, frame: pl.DataFrame
) -> None:
    preview = preview_training(SCHEMA, logistic.spec, ROWS)
    card = logistic.result.card
    assert preview.noise_multiplier == card["noise_multiplier"]
    assert preview.sample_rate == card["sample_rate"] == 256 / (ROWS * 0.8)
    assert preview.steps == card["steps"] == 5 * int(ROWS * 0.8 / 256)
    assert preview.epsilon == 1.0 and preview.delta == 1e-5 and preview.notes
    # 4 321 private rows, the same public count: the same noise and rate.
    smaller = train_model(frame.head(4_321), SCHEMA, logistic.spec, ROWS)
    assert smaller.card["noise_multiplier"] == preview.noise_multiplier
    assert smaller.card["sample_rate"] == preview.sample_rate


def test_the_card_has_every_field_and_is_json(any_run: Run) -> None:
    card = any_run.result.card
    expected = {
        "family", "hidden_sizes", "features", "target", "epochs", "batch_size",
        "learning_rate", "max_grad_norm", "noise_multiplier", "sample_rate", "steps",
        "rows_public", "epsilon", "epsilon_training", "epsilon_metrics", "delta",
        "accountant", "metrics", "opacus_version", "torch_version", "guarantee",
    }  # fmt: skip
    assert expected <= card.keys()
    assert {"name", "value", "ci95", "noise_scale"} <= card["metrics"].keys()
    assert card["accountant"] == "prv" and card["grad_sample_mode"] == "ghost"
    assert card["rows_public"] == ROWS and card["opacus_version"] == "1.6.0"
    assert "differential privacy" in card["guarantee"]
    assert json.loads(json.dumps(card)) == card
    features = {f["name"]: f for f in card["features"]}
    assert features["temperature_c"] == {
        "name": "temperature_c", "encoding": "scaled", "lower": 0.0, "upper": 150.0,
    }  # fmt: skip
    assert features["line"]["categories"] == list(LINES)


def test_progress_is_reported_once_per_epoch(any_run: Run) -> None:
    assert [e for e, _ in any_run.epochs] == list(range(1, any_run.spec.epochs + 1))
    assert all(math.isfinite(loss) and loss >= 0 for _, loss in any_run.epochs)


# ---------------------------------------------------------------- weights


def test_weights_are_safetensors_never_pickle(any_run: Run) -> None:
    weights = any_run.result.weights
    (header_size,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8 : 8 + header_size])
    assert weights[8:9] == b"{" and not weights.startswith(b"\x80")  # no pickle protocol
    loaded = safetensors.torch.load(weights)
    assert set(loaded) == {k for k in header if k != "__metadata__"}
    assert set(loaded) == set(any_run.model.state_dict())


def test_no_pickle_in_the_training_code() -> None:
    root = Path(training.__file__).parent
    for path in root.glob("training*.py"):
        text = path.read_text()
        assert "pickle" not in text
        assert not re.search(r"(?<![.\w])torch\.(save|load)\(", text)  # safetensors' are fine
        assert "safetensors.torch.save(" in text or path.name != "training.py"


def test_no_hand_rolled_noise() -> None:
    """Every noise sample comes from Opacus (DP-SGD) or OpenDP (metrics)."""
    root = Path(training.__file__).parent
    for path in root.glob("training*.py"):
        text = path.read_text()
        for forbidden in (
            ".laplace(",
            "laplace_noise",
            "def noise",
            "def add_noise",
            "torch.randn",
            "torch.normal",
            "np.random",
            "import random",
        ):
            assert forbidden not in text, (path.name, forbidden)


def test_load_and_predict_reproduce_the_in_process_model(any_run: Run, fresh: pl.DataFrame) -> None:
    card = json.loads(json.dumps(any_run.result.card))  # as stored and read back
    loaded = load_model(any_run.result.weights, card)
    assert not loaded.training
    assert predict(loaded, card, fresh) == predict(any_run.model, card, fresh)


def test_predict_applies_the_declared_encoding(logistic: Run, fresh: pl.DataFrame) -> None:
    """An independent forward pass from the raw tensors and the card's bounds."""
    tensors = safetensors.torch.load(logistic.result.weights)
    w, b = tensors["0.weight"].double().numpy(), tensors["0.bias"].double().numpy()
    x = np.column_stack(
        [
            np.clip(fresh["temperature_c"].to_numpy(), 0, 150) / 150,
            np.clip(fresh["vibration_mm_s"].to_numpy(), 0, 20) / 20,
            *[(fresh["line"] == line).to_numpy().astype(float) for line in LINES],
        ]
    )
    logits = x @ w.T + b
    predicted = predict(
        load_model(logistic.result.weights, logistic.result.card), logistic.result.card, fresh
    )
    clear = np.abs(logits[:, 1] - logits[:, 0]) > 1e-4  # float32 vs float64 near-ties aside
    manual = np.where(logits[:, 1] > logits[:, 0], "true", "false")
    assert clear.mean() > 0.99
    assert (np.asarray(predicted)[clear] == manual[clear]).all()


def test_null_features_count_as_the_lower_bound() -> None:
    frame = pl.DataFrame(
        {
            "temperature_c": [None, float("nan"), 300.0, -5.0, 75.0],
            "line": ["north", None, "x", "east", "south"],
        }
    )
    cards = [feature_card(SCHEMA, "temperature_c"), feature_card(SCHEMA, "line")]
    x = encode_features(frame, cards).tolist()
    assert [row[0] for row in x] == [0.0, 0.0, 1.0, 0.0, 0.5]
    assert [row[1:] for row in x] == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]]


# ---------------------------------------------------------------- runs and refusals


def small(rows: int = 400, seed: int = 3) -> pl.DataFrame:
    return maintenance(rows, seed)


def test_rows_with_null_targets_are_dropped_and_the_seed_fixes_no_noise() -> None:
    frame = small().with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(None)
        .otherwise(pl.col("failure"))
        .alias("failure")
    )
    s = spec(batch_size=32, epochs=1)
    first, second = train_model(frame, SCHEMA, s, 400), train_model(frame, SCHEMA, s, 400)
    assert first.epsilon <= 1.0
    # Same public seed, different weights: the noise and sampling are not seeded by it.
    assert first.weights != second.weights


def test_should_stop_cancels_and_releases_nothing() -> None:
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingCancelled):
        train_model(small(), SCHEMA, spec(batch_size=32), 400, should_stop=stop)
    assert len(calls) == 4  # checked before every batch


def test_secure_mode_needs_torchcsprng() -> None:
    s = spec(batch_size=32, epochs=1)
    if find_spec("torchcsprng") is None:
        with pytest.raises(TrainingError, match="secure_mode needs the torchcsprng package"):
            train_model(small(), SCHEMA, s, 400, secure_mode=True)
    else:  # pragma: no cover - not installed in this environment
        assert train_model(small(), SCHEMA, s, 400, secure_mode=True).card["secure_mode"]


def test_one_row_per_id_trains_and_more_is_refused() -> None:
    per_id = DatasetSchema(COLUMNS, PrivacyUnit("operator", 1))
    frame = small().with_columns(pl.format("op-{}", pl.int_range(pl.len())).alias("operator"))
    assert train_model(frame, per_id, spec(batch_size=32, epochs=1), 400).epsilon <= 1.0
    grouped = DatasetSchema(COLUMNS, PrivacyUnit("operator", 5))
    with pytest.raises(TrainingError) as error:
        validate_training(grouped, spec())
    assert str(error.value) == (
        "tier-4 training protects single rows; this dataset's privacy unit is an id with up to "
        "5 rows"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ("temperature_c", "operator")}, "column 'operator' (feature) is secret"),
        ({"target": "operator"}, "column 'operator' (target) is secret"),
        ({"features": ("notes",)}, "'notes' (feature): a string feature must be public"),
        ({"features": ("missing",)}, "column 'missing' (feature) is not declared"),
        ({"target": "life_h"}, "column 'life_h' (target): a classifier needs a boolean"),
        ({"target": "failure", "family": ModelFamily.MLP_REGRESSOR}, "a regressor needs a numeric"),
        ({"epochs": 0}, "epochs: expected an integer from 1 to 100"),
        ({"delta": 0.0}, "delta: expected a number strictly between 0 and 1"),
        ({"hidden_sizes": (8,)}, "hidden_sizes: logistic_regression has no hidden layers"),
        ({"target": "line"}, "target: the target column cannot also be a feature"),
    ],
)
def test_refusals_name_the_field_never_a_value(change: dict[str, Any], message: str) -> None:
    s = spec()
    values = {**s.__dict__, **change}
    if change.get("family") == ModelFamily.MLP_REGRESSOR:
        values["hidden_sizes"] = (8,)
    with pytest.raises(TrainingError) as error:
        validate_training(SCHEMA, TrainingSpec(**values))
    assert message in str(error.value) and SECRET_VALUE not in str(error.value)


def test_budget_and_public_count_refusals() -> None:
    with pytest.raises(TrainingError, match=r"delta must be below 1/n"):
        preview_training(SCHEMA, spec(), 100_000)  # delta 1e-5 = 1/100 000
    with pytest.raises(TrainingError, match="batch_size: must not exceed the training rows"):
        preview_training(SCHEMA, spec(), 300)  # 240 training rows < batch_size 256
    with pytest.raises(TrainingError, match="epsilon: too small"):
        preview_training(SCHEMA, spec(epsilon=1e-9), ROWS)
    with pytest.raises(TrainingError, match="rows_public: expected a positive integer"):
        preview_training(SCHEMA, spec(), 0)


def test_bad_weights_or_card_are_refused(logistic: Run, fresh: pl.DataFrame) -> None:
    with pytest.raises(TrainingError, match="weights: not safetensors"):
        load_model(b"not weights", logistic.result.card)
    with pytest.raises(TrainingError, match="weights: not safetensors"):
        load_model(logistic.result.weights, {**logistic.result.card, "inputs": 3})
    with pytest.raises(TrainingError, match="card: not a Veil model card"):
        load_model(logistic.result.weights, {"family": "forest"})
    with pytest.raises(TrainingError, match="column 'line' \\(feature\\) is missing"):
        predict(
            load_model(logistic.result.weights, logistic.result.card),
            logistic.result.card,
            fresh.drop("line"),
        )


# ---------------------------------------------------------------- the document

DOC: dict[str, Any] = {
    "family": "mlp_classifier",
    "features": ["temperature_c", "vibration_mm_s", "line"],
    "target": "failure",
    "epsilon": 1,
    "delta": 1e-6,
    "hidden_sizes": [32, 16.0],
    "epochs": 3,
}


def test_parses_a_document() -> None:
    assert parse_training(DOC) == TrainingSpec(
        ModelFamily.MLP_CLASSIFIER, FEATURES, "failure", 1.0, 1e-6, epochs=3, hidden_sizes=(32, 16)
    )
    minimal = {k: DOC[k] for k in ("features", "target", "epsilon", "delta")}
    assert parse_training({**minimal, "family": "logistic_regression"}).hidden_sizes == ()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "training: expected a JSON object"),
        ({**DOC, "epochz": 3}, "training: unknown field 'epochz'; expected only"),
        ({**DOC, SECRET_VALUE: 1}, "training: unknown field; expected only"),
        ({k: v for k, v in DOC.items() if k != "delta"}, "delta: required"),
        ({**DOC, "family": "random_forest"}, "family: expected one of logistic_regression"),
        ({**DOC, "features": "temperature_c"}, "features: expected a list of 1 to 200"),
        ({**DOC, "features": []}, "features: expected a list of 1 to 200"),
        ({**DOC, "features": ["a", "b", "a"]}, "features[2]: column listed twice"),
        ({**DOC, "features": ["ok", "bad name"]}, "features[1]: expected a column name"),
        ({**DOC, "target": 3}, "target: expected a column name"),
        ({**DOC, "target": "line"}, "target: the target column cannot also be a feature"),
        ({**DOC, "epochs": 0}, "epochs: expected an integer from 1 to 100"),
        ({**DOC, "epochs": 2.5}, "epochs: expected an integer from 1 to 100"),
        ({**DOC, "batch_size": True}, "batch_size: expected an integer from 8 to 10000"),
        ({**DOC, "learning_rate": 0}, "learning_rate: expected a number above 0 and at most 10"),
        ({**DOC, "max_grad_norm": 101}, "max_grad_norm: expected a number above 0 and at most"),
        ({**DOC, "epsilon": -1}, "epsilon: expected a number above 0"),
        ({**DOC, "epsilon": float("inf")}, "epsilon: expected a number above 0"),
        ({**DOC, "epsilon": 21}, "epsilon: expected a number above 0 and at most 20"),
        ({**DOC, "delta": 1}, "delta: expected a number strictly between 0 and 1"),
        ({**DOC, "holdout_fraction": 0.6}, "holdout_fraction: expected a number from 0.05 to 0.5"),
        ({**DOC, "metrics_epsilon_share": 0}, "metrics_epsilon_share: expected a number from"),
        ({**DOC, "seed": -1}, "seed: expected an integer from 0 to 2147483647"),
        ({k: v for k, v in DOC.items() if k != "hidden_sizes"}, "hidden_sizes: required for"),
        ({**DOC, "hidden_sizes": []}, "hidden_sizes: mlp_classifier needs 1 to 3"),
        ({**DOC, "hidden_sizes": [4, 4, 4, 4]}, "hidden_sizes: expected a list of at most 3"),
        ({**DOC, "hidden_sizes": [4, 513]}, "hidden_sizes[1]: expected an integer from 1 to 512"),
        ({**DOC, "family": "logistic_regression"}, "hidden_sizes: logistic_regression has no"),
    ],
)
def test_document_errors_name_the_path(doc: Any, message: str) -> None:
    with pytest.raises(TrainingError) as error:
        parse_training(doc)
    assert str(error.value).startswith(message)
    assert SECRET_VALUE not in str(error.value)


def test_json_schema_covers_the_document() -> None:
    schema = training_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(TrainingSpec.__dataclass_fields__)
    assert schema["required"] == ["family", "features", "target", "epsilon", "delta"]
    assert schema["properties"]["epochs"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert schema["properties"]["delta"]["exclusiveMinimum"] == 0
    assert schema["properties"]["family"]["enum"] == [str(f) for f in ModelFamily]
    json.dumps(schema)
