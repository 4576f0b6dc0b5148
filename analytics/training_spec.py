"""Tier-4 training: the request's values, their limits, and the errors training raises.

Shared by the document parser (``analytics.training_document``), the schema checks and
the trainer (``analytics.training``).  Nothing here looks at data.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Final

from i18n import Msg


class ModelFamily(enum.StrEnum):
    """What kind of model to train."""

    LOGISTIC_REGRESSION = "logistic_regression"  # linear layer + softmax over the classes
    MLP_CLASSIFIER = "mlp_classifier"  # 1-3 ReLU hidden layers + softmax
    MLP_REGRESSOR = "mlp_regressor"  # 1-3 ReLU hidden layers, one output


CLASSIFIERS: Final = frozenset({ModelFamily.LOGISTIC_REGRESSION, ModelFamily.MLP_CLASSIFIER})

MIN_FEATURES: Final = 1
MAX_FEATURES: Final = 200
MAX_HIDDEN_LAYERS: Final = 3
MAX_HIDDEN_UNITS: Final = 512
#: Most classes a classifier's target may have (declared categories or integer range).
MAX_CLASSES: Final = 20
#: Largest total epsilon a training request may spend.
MAX_EPSILON: Final = 20.0
#: Most optimizer steps (epochs x batches per epoch): bounds the run time and the accountant's.
MAX_STEPS: Final = 50_000


class TrainingError(ValueError):
    """A training request that cannot be run; the message names the field or column,
    never a data value."""


class TrainingCancelled(Exception):
    """Raised when ``should_stop`` asked training to stop; nothing is released."""


@dataclass(frozen=True)
class TrainingSpec:
    """One DP training request (see ``analytics.training`` for what each value does)."""

    family: ModelFamily
    features: tuple[str, ...]
    target: str
    epsilon: float
    delta: float
    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 0.1
    max_grad_norm: float = 1.0
    hidden_sizes: tuple[int, ...] = ()  # MLP only (1-3 layers, 1..512 units each)
    holdout_fraction: float = 0.2  # rows held out for the released metrics
    metrics_epsilon_share: float = 0.1  # share of epsilon spent on held-out metrics
    seed: int = 0


#: A field's range in words, whole numbers or not (templates, so that they translate).
_RANGES: Final = {
    (True, "above"): Msg("an integer above {low}"),
    (True, "at_least"): Msg("an integer of at least {low}"),
    (True, "between"): Msg("an integer strictly between {low} and {high}"),
    (True, "above_at_most"): Msg("an integer above {low} and at most {high}"),
    (True, "at_least_below"): Msg("an integer of at least {low} and below {high}"),
    (True, "from_to"): Msg("an integer from {low} to {high}"),
    (False, "above"): Msg("a number above {low}"),
    (False, "at_least"): Msg("a number of at least {low}"),
    (False, "between"): Msg("a number strictly between {low} and {high}"),
    (False, "above_at_most"): Msg("a number above {low} and at most {high}"),
    (False, "at_least_below"): Msg("a number of at least {low} and below {high}"),
    (False, "from_to"): Msg("a number from {low} to {high}"),
}


@dataclass(frozen=True)
class NumberField:
    """A numeric field's range: ``low``/``high`` inclusive unless marked open."""

    name: str
    integer: bool
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    description: str = ""

    @property
    def expected(self) -> Msg:
        """The range in words, for error messages."""
        low, high = str(_plain(self.low)), "" if self.high is None else str(_plain(self.high))
        if self.high is None:
            form = "above" if self.low_open else "at_least"
        elif self.low_open and self.high_open:
            form = "between"
        elif self.low_open:
            form = "above_at_most"
        elif self.high_open:
            form = "at_least_below"
        else:
            form = "from_to"
        return Msg(_RANGES[self.integer, form].template, low=low, high=high)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (already a Python number) lies in the range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value) or (self.integer and not float(value).is_integer()):
            return False
        number = float(value)
        above = number > self.low if self.low_open else number >= self.low
        if self.high is None:
            return above
        return above and (number < self.high if self.high_open else number <= self.high)

    def json_schema(self) -> dict[str, Any]:
        """This range as a JSON Schema fragment."""
        out: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        out["exclusiveMinimum" if self.low_open else "minimum"] = _plain(self.low)
        if self.high is not None:
            out["exclusiveMaximum" if self.high_open else "maximum"] = _plain(self.high)
        if self.description:
            out["description"] = self.description
        return out


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


#: Every numeric field of a training request, in document order.
NUMBER_FIELDS: Final = (
    # Above 20 a DP guarantee says little, and Opacus' PRV search slows down sharply.
    NumberField(
        "epsilon", False, 0.0, MAX_EPSILON, low_open=True, description="Total privacy budget."
    ),
    NumberField(
        "delta",
        False,
        0.0,
        1.0,
        low_open=True,
        high_open=True,
        description="DP-SGD's delta; must also be below 1/rows_public.",
    ),
    NumberField("epochs", True, 1, 100),
    NumberField("batch_size", True, 8, 10_000, description="Expected rows per batch."),
    NumberField("learning_rate", False, 0.0, 10.0, low_open=True),
    NumberField("max_grad_norm", False, 0.0, 100.0, low_open=True),
    NumberField("holdout_fraction", False, 0.05, 0.5),
    NumberField("metrics_epsilon_share", False, 0.01, 0.5),
    NumberField("seed", True, 0, 2**31 - 1),
)


def check_values(spec: TrainingSpec) -> None:
    """Raise TrainingError unless every value of ``spec`` is in range (no schema needed)."""
    if not isinstance(spec.family, ModelFamily):
        raise TrainingError(
            Msg(
                "family: expected one of {modelfamily}",
                modelfamily=", ".join(ModelFamily),
            )
        )
    for field in NUMBER_FIELDS:
        if not field.accepts(getattr(spec, field.name)):
            raise TrainingError(
                Msg(
                    "{name}: expected {expected}",
                    name=field.name,
                    expected=field.expected,
                )
            )
    if not MIN_FEATURES <= len(spec.features) <= MAX_FEATURES:
        raise TrainingError(
            Msg(
                "features: expected {min_features} to {max_features} column names",
                min_features=MIN_FEATURES,
                max_features=MAX_FEATURES,
            )
        )
    for i, name in enumerate(spec.features):
        if name in spec.features[:i]:
            raise TrainingError(
                Msg(
                    "features[{i}]: column listed twice",
                    i=i,
                )
            )
    if spec.target in spec.features:
        raise TrainingError(Msg("target: the target column cannot also be a feature"))
    check_hidden_sizes(spec.family, spec.hidden_sizes)


def check_hidden_sizes(family: ModelFamily, sizes: tuple[int, ...]) -> None:
    """MLPs take 1-3 hidden layers of 1..512 units; logistic regression none."""
    if family == ModelFamily.LOGISTIC_REGRESSION:
        if sizes:
            raise TrainingError(Msg("hidden_sizes: logistic_regression has no hidden layers"))
        return
    if not 1 <= len(sizes) <= MAX_HIDDEN_LAYERS:
        raise TrainingError(
            Msg(
                "hidden_sizes: {family} needs 1 to {max_hidden_layers} hidden layer sizes",
                family=family,
                max_hidden_layers=MAX_HIDDEN_LAYERS,
            )
        )
    for i, units in enumerate(sizes):
        if isinstance(units, bool) or not isinstance(units, int):
            raise TrainingError(
                Msg(
                    "hidden_sizes[{i}]: expected an integer",
                    i=i,
                )
            )
        if not 1 <= units <= MAX_HIDDEN_UNITS:
            raise TrainingError(
                Msg(
                    "hidden_sizes[{i}]: expected 1 to {max_hidden_units} units",
                    i=i,
                    max_hidden_units=MAX_HIDDEN_UNITS,
                )
            )
