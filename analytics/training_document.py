"""The training document: its JSON Schema and a strict parser.

A provider asks for a model as JSON, never code::

    {"family": "mlp_classifier", "features": ["temperature_c", "vibration_mm_s", "line"],
     "target": "failure", "epsilon": 1.0, "delta": 1e-6, "hidden_sizes": [32, 32]}

``parse_training`` checks the document's shape and ranges only; whether the dataset can
serve it is ``analytics.training.validate_training``'s job, and ``delta < 1/rows_public``
is checked where the public row count is known (preview and training).  As with
``analytics.query_document``, errors name the JSON path and what was expected and never
repeat a submitted value, except an unknown field's name when it looks like a column name.
"""

from __future__ import annotations

from typing import Any, Final

from analytics.column_names import COLUMN_PATTERN, column_name_problem, is_column_name, normalise
from analytics.training_spec import (
    MAX_FEATURES,
    MAX_HIDDEN_LAYERS,
    MAX_HIDDEN_UNITS,
    MIN_FEATURES,
    NUMBER_FIELDS,
    ModelFamily,
    NumberField,
    TrainingError,
    TrainingSpec,
    check_values,
)
from i18n import Msg

_REQUIRED: Final = ("family", "features", "target", "epsilon", "delta")
_FIELDS: Final = frozenset(
    {"family", "features", "target", "hidden_sizes", *(f.name for f in NUMBER_FIELDS)}
)
_FAMILIES: Final = tuple(str(f) for f in ModelFamily)
_MLPS: Final = tuple(str(f) for f in ModelFamily if f != ModelFamily.LOGISTIC_REGRESSION)


def training_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a training document."""
    column = {"$ref": "#/$defs/column"}
    properties: dict[str, Any] = {
        "family": {"enum": list(_FAMILIES)},
        "features": {
            "type": "array",
            "items": column,
            "minItems": MIN_FEATURES,
            "maxItems": MAX_FEATURES,
            "uniqueItems": True,
        },
        "target": column,
        "hidden_sizes": {
            "description": "MLP hidden layer sizes; empty or absent for logistic_regression.",
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": MAX_HIDDEN_UNITS},
            "maxItems": MAX_HIDDEN_LAYERS,
        },
    }
    properties.update({f.name: f.json_schema() for f in NUMBER_FIELDS})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Veil private model training",
        "description": "A model to train with DP-SGD (Opacus); metrics released with OpenDP.",
        "type": "object",
        "additionalProperties": False,
        "required": list(_REQUIRED),
        "properties": properties,
        "allOf": [
            {
                "if": {"properties": {"family": {"enum": list(_MLPS)}}},
                "then": {
                    "required": ["hidden_sizes"],
                    "properties": {"hidden_sizes": {"minItems": 1}},
                },
            },
            {
                "if": {"properties": {"family": {"const": str(ModelFamily.LOGISTIC_REGRESSION)}}},
                "then": {"properties": {"hidden_sizes": {"maxItems": 0}}},
            },
        ],
        "$defs": {"column": {"type": "string", "pattern": COLUMN_PATTERN}},
    }


def parse_training(doc: Any) -> TrainingSpec:
    """The TrainingSpec of a training document; TrainingError naming the JSON path otherwise."""
    if not isinstance(doc, dict):
        raise TrainingError(Msg("training: expected a JSON object"))
    for key in doc:
        if key not in _FIELDS:
            shown = f" {key!r}" if is_column_name(key) else ""
            raise TrainingError(
                Msg(
                    "training: unknown field{shown}; expected only {fields}",
                    shown=shown,
                    fields=", ".join(sorted(_FIELDS)),
                )
            )
    for name in _REQUIRED:
        if name not in doc:
            raise TrainingError(
                Msg(
                    "{name}: required",
                    name=name,
                )
            )
    family = _family(doc["family"])
    numbers: dict[str, Any] = {
        f.name: _number(doc[f.name], f) for f in NUMBER_FIELDS if f.name in doc
    }
    spec = TrainingSpec(
        family=family,
        features=_features(doc["features"]),
        target=_column(doc["target"], "target"),
        hidden_sizes=_hidden_sizes(doc.get("hidden_sizes"), family),
        **numbers,
    )
    check_values(spec)  # cross-field rules (target among features, ...)
    return spec


def _family(value: Any) -> ModelFamily:
    if not isinstance(value, str) or value not in _FAMILIES:
        raise TrainingError(
            Msg(
                "family: expected one of {families}",
                families=", ".join(_FAMILIES),
            )
        )
    return ModelFamily(value)


def _column(value: Any, path: str) -> str:
    problem = column_name_problem(value)
    if problem is not None:
        raise TrainingError(Msg("{path}: expected {column_help}", path=path, column_help=problem))
    assert isinstance(value, str)
    return normalise(value)


def _features(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not MIN_FEATURES <= len(value) <= MAX_FEATURES:
        raise TrainingError(
            Msg(
                "features: expected a list of {min_features} to {max_features} column names",
                min_features=MIN_FEATURES,
                max_features=MAX_FEATURES,
            )
        )
    names = tuple(_column(name, f"features[{i}]") for i, name in enumerate(value))
    for i, name in enumerate(names):
        if name in names[:i]:
            raise TrainingError(
                Msg(
                    "features[{i}]: column listed twice",
                    i=i,
                )
            )
    return names


def _whole(value: Any) -> bool:
    # JSON has one number type: 10.0 is the integer 10, as in JSON Schema.
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return whole and not isinstance(value, bool)


def _number(value: Any, field: NumberField) -> int | float:
    if field.integer and not _whole(value):
        raise TrainingError(
            Msg(
                "{name}: expected {expected}",
                name=field.name,
                expected=field.expected,
            )
        )
    if not field.accepts(value):
        raise TrainingError(
            Msg(
                "{name}: expected {expected}",
                name=field.name,
                expected=field.expected,
            )
        )
    return int(value) if field.integer else float(value)


def _hidden_sizes(value: Any, family: ModelFamily) -> tuple[int, ...]:
    if value is None:
        if family != ModelFamily.LOGISTIC_REGRESSION:
            raise TrainingError(
                Msg(
                    "hidden_sizes: required for {family} (1 to {max_hidden_layers} layer sizes)",
                    family=family,
                    max_hidden_layers=MAX_HIDDEN_LAYERS,
                )
            )
        return ()
    if not isinstance(value, list) or len(value) > MAX_HIDDEN_LAYERS:
        raise TrainingError(
            Msg(
                "hidden_sizes: expected a list of at most {max_hidden_layers} layer sizes",
                max_hidden_layers=MAX_HIDDEN_LAYERS,
            )
        )
    sizes = []
    for i, units in enumerate(value):
        if not _whole(units) or not 1 <= units <= MAX_HIDDEN_UNITS:
            raise TrainingError(
                Msg(
                    "hidden_sizes[{i}]: expected an integer from 1 to {max_hidden_units}",
                    i=i,
                    max_hidden_units=MAX_HIDDEN_UNITS,
                )
            )
        sizes.append(int(units))
    return tuple(sizes)


if __name__ == "__main__":  # pragma: no cover - prints the schema
    import json

    print(json.dumps(training_json_schema(), indent=2))
