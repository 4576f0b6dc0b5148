"""The declarative query document: its JSON Schema and a strict parser.

A provider submits a query as JSON, never code::

    {"aggregates": [{"kind": "count"},
                    {"kind": "mean", "column": "temperature_c"},
                    {"kind": "quantile", "column": "cycle_time_s", "q": 0.9},
                    {"kind": "histogram", "column": "temperature_c", "bins": 10}],
     "group_by": ["shift"],
     "where": [{"column": "line", "op": "in", "value": ["L1", "L2"]},
               {"column": "temperature_c", "op": "<", "value": 90}]}

``where`` keeps the rows that pass every filter (AND); ``docs/sql.md`` gives the same
query as SQL (``analytics.sql`` translates SQL into this document).

``parse_query`` checks the document's shape only (fields, types, ranges); whether the
dataset can answer it is ``analytics.private_query.validate_query``'s job.  Error
messages name the JSON path and what was expected; they never repeat a submitted value,
except an unknown field's name when it is shaped like a column name.
``python -m analytics.query_document`` prints the schema (``docs/query.schema.json``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from analytics.column_names import COLUMN_PATTERN, column_name_problem, is_column_name, normalise
from analytics.dp_catalog import (
    MAX_AGGREGATES,
    MAX_BINS,
    MAX_FILTER_TEXT,
    MAX_FILTERS,
    MAX_GROUP_COLUMNS,
    MAX_IN_VALUES,
    MIN_BINS,
    QueryError,
)
from analytics.schema import (
    Aggregate,
    AggregateKind,
    Filter,
    FilterOp,
    FilterScalar,
    FilterValue,
    PrivateQuery,
)
from i18n import Msg

_KINDS: Final = tuple(str(kind) for kind in AggregateKind)
_OPS: Final = tuple(str(op) for op in FilterOp)
#: Operators that order their operands: numbers only.
ORDERING_OPS: Final = frozenset({FilterOp.LT, FilterOp.LE, FilterOp.GT, FilterOp.GE})
#: The fields each kind takes, and which of them are required.
_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "count": (frozenset({"kind", "column"}), frozenset({"kind"})),
    "sum": (frozenset({"kind", "column"}), frozenset({"kind", "column"})),
    "mean": (frozenset({"kind", "column"}), frozenset({"kind", "column"})),
    "median": (frozenset({"kind", "column"}), frozenset({"kind", "column"})),
    "quantile": (frozenset({"kind", "column", "q"}), frozenset({"kind", "column", "q"})),
    "histogram": (frozenset({"kind", "column", "bins"}), frozenset({"kind", "column"})),
}


def query_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a query document."""
    column = {"$ref": "#/$defs/column"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Veil private query",
        "description": "Aggregates to release with differential privacy, optionally grouped.",
        "type": "object",
        "additionalProperties": False,
        "required": ["aggregates"],
        "properties": {
            "aggregates": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_AGGREGATES,
                "items": {"oneOf": [_kind_schema(kind) for kind in _KINDS]},
            },
            "group_by": {
                "description": "Group keys: one column name, a list of them, or null.",
                "oneOf": [
                    column,
                    {
                        "type": "array",
                        "items": column,
                        "maxItems": MAX_GROUP_COLUMNS,
                        "uniqueItems": True,
                    },
                    {"type": "null"},
                ],
            },
            "where": {
                "description": "Filters applied to every row before aggregating; a row is "
                "kept when it passes all of them (AND).",
                "type": "array",
                "maxItems": MAX_FILTERS,
                "items": {"$ref": "#/$defs/filter"},
            },
        },
        "$defs": {
            "column": {"type": "string", "pattern": COLUMN_PATTERN},
            "scalar": {
                "oneOf": [
                    {"type": "string", "maxLength": MAX_FILTER_TEXT},
                    {"type": "number"},
                    {"type": "boolean"},
                ]
            },
            "filter": _filter_schema(),
        },
    }


def _filter_schema() -> dict[str, Any]:
    scalar = {"$ref": "#/$defs/scalar"}
    values = {"type": "array", "minItems": 1, "maxItems": MAX_IN_VALUES, "items": scalar}
    return {
        "description": "column op value; ordering operators take a number, in a list.",
        "type": "object",
        "additionalProperties": False,
        "required": ["column", "op", "value"],
        "properties": {
            "column": {"$ref": "#/$defs/column"},
            "op": {"enum": list(_OPS)},
            "value": {"oneOf": [scalar, values]},
        },
    }


def _kind_schema(kind: str) -> dict[str, Any]:
    allowed, required = _FIELDS[kind]
    properties: dict[str, Any] = {"kind": {"const": kind}, "column": {"$ref": "#/$defs/column"}}
    if "q" in allowed:
        properties["q"] = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    if "bins" in allowed:
        properties["bins"] = {
            "description": "Numeric columns only: equal-width bins over the declared bounds.",
            "type": "integer",
            "minimum": MIN_BINS,
            "maximum": MAX_BINS,
        }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": sorted(required, key=["kind", "column", "q"].index),
        "properties": properties,
    }


def schema_text() -> str:
    """The schema as written to ``docs/query.schema.json``."""
    return json.dumps(query_json_schema(), indent=2) + "\n"


# ---------------------------------------------------------------- parsing


def parse_query(doc: Any) -> PrivateQuery:
    """The PrivateQuery of a query document; QueryError naming the JSON path otherwise."""
    if not isinstance(doc, dict):
        raise QueryError(Msg("query: expected a JSON object"))
    _no_unknown_fields(doc, frozenset({"aggregates", "group_by", "where"}), "query")
    if "aggregates" not in doc:
        raise QueryError(Msg("aggregates: required"))
    items = doc["aggregates"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_AGGREGATES:
        raise QueryError(
            Msg(
                "aggregates: expected a list of 1 to {max_aggregates} aggregates",
                max_aggregates=MAX_AGGREGATES,
            )
        )
    aggregates = tuple(_aggregate(item, f"aggregates[{i}]") for i, item in enumerate(items))
    return PrivateQuery(aggregates, _group_by(doc.get("group_by")), _where(doc.get("where")))


def _no_unknown_fields(doc: dict[Any, Any], allowed: frozenset[str], path: str) -> None:
    for key in doc:
        if key not in allowed:
            # Echo the name only when it is shaped like a column name: short and plain.
            shown = f" {key!r}" if is_column_name(key) else ""
            expected = ", ".join(sorted(allowed))
            raise QueryError(
                Msg(
                    "{path}: unknown field{shown}; expected only {expected}",
                    path=path,
                    shown=shown,
                    expected=expected,
                )
            )


def _aggregate(item: Any, path: str) -> Aggregate:
    if not isinstance(item, dict):
        raise QueryError(
            Msg(
                "{path}: expected an object",
                path=path,
            )
        )
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise QueryError(
            Msg(
                "{path}.kind: expected one of {kinds}",
                path=path,
                kinds=", ".join(_KINDS),
            )
        )
    allowed, required = _FIELDS[kind]
    _no_unknown_fields(item, allowed, f"{path} ({kind})")
    missing = sorted(required - item.keys())
    if missing:
        raise QueryError(
            Msg(
                "{path}.{missing}: required for {kind}",
                path=path,
                missing=missing[0],
                kind=kind,
            )
        )
    column = item.get("column")
    if column is not None or "column" in item:
        column = _column(column, f"{path}.column")
    q = _q(item["q"], f"{path}.q") if "q" in item else None
    bins = _bins(item["bins"], f"{path}.bins") if "bins" in item else None
    return Aggregate(AggregateKind(kind), column, q=q, bins=bins)


def _column(value: Any, path: str) -> str:
    problem = column_name_problem(value)
    if problem is not None:
        raise QueryError(Msg("{path}: expected {column_help}", path=path, column_help=problem))
    assert isinstance(value, str)
    return normalise(value)


def _q(value: Any, path: str) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 < value < 1):
        raise QueryError(
            Msg(
                "{path}: expected a number strictly between 0 and 1",
                path=path,
            )
        )
    return float(value)


def _bins(value: Any, path: str) -> int:
    # JSON has one number type: 10.0 is the integer 10, as in JSON Schema.
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not MIN_BINS <= value <= MAX_BINS:
        raise QueryError(
            Msg(
                "{path}: expected an integer from {min_bins} to {max_bins}",
                path=path,
                min_bins=MIN_BINS,
                max_bins=MAX_BINS,
            )
        )
    return int(value)


def _group_by(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (_column(value, "group_by"),)
    if not isinstance(value, list) or len(value) > MAX_GROUP_COLUMNS:
        raise QueryError(
            Msg(
                "group_by: expected {column_help}, or a list of at most "
                "{max_group_columns} of them",
                column_help=Msg("a column name"),
                max_group_columns=MAX_GROUP_COLUMNS,
            )
        )
    names = tuple(_column(name, f"group_by[{i}]") for i, name in enumerate(value))
    for i, name in enumerate(names):
        if name in names[:i]:
            raise QueryError(
                Msg(
                    "group_by[{i}]: column listed twice",
                    i=i,
                )
            )
    return names


def _where(value: Any) -> tuple[Filter, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_FILTERS:
        raise QueryError(
            Msg(
                "where: expected a list of at most {max_filters} filters",
                max_filters=MAX_FILTERS,
            )
        )
    return tuple(_filter(item, f"where[{i}]") for i, item in enumerate(value))


def _filter(item: Any, path: str) -> Filter:
    if not isinstance(item, dict):
        raise QueryError(Msg("{path}: expected an object", path=path))
    _no_unknown_fields(item, frozenset({"column", "op", "value"}), path)
    for name in ("column", "op", "value"):
        if name not in item:
            raise QueryError(Msg("{path}.{missing}: required", path=path, missing=name))
    column = _column(item["column"], f"{path}.column")
    op = item["op"]
    if not isinstance(op, str) or op not in _OPS:
        raise QueryError(Msg("{path}.op: expected one of {ops}", path=path, ops=", ".join(_OPS)))
    return Filter(column, FilterOp(op), _filter_value(FilterOp(op), item["value"], path))


def _filter_value(op: FilterOp, value: Any, path: str) -> FilterValue:
    if op == FilterOp.IN:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise QueryError(
                Msg(
                    "{path}.value: in takes a list of 1 to {max_values} values",
                    path=path,
                    max_values=MAX_IN_VALUES,
                )
            )
        values = tuple(_scalar(v, f"{path}.value[{i}]") for i, v in enumerate(value))
        if len({_json_type(v) for v in values}) > 1:
            raise QueryError(
                Msg("{path}.value: the values of in must all be of one type", path=path)
            )
        return values
    scalar = _scalar(value, f"{path}.value")
    if op in ORDERING_OPS and _json_type(scalar) != "number":
        raise QueryError(
            Msg("{path}.value: {op} compares numbers only; expected a number", path=path, op=op)
        )
    return scalar


def _scalar(value: Any, path: str) -> FilterScalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_FILTER_TEXT:
        return value
    raise QueryError(
        Msg(
            "{path}: expected a finite number, a boolean or a text of at most "
            "{max_text} characters",
            path=path,
            max_text=MAX_FILTER_TEXT,
        )
    )


def _json_type(value: FilterScalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def query_document(query: PrivateQuery) -> dict[str, Any]:
    """The query document of ``query``: ``parse_query(query_document(q)) == q``."""
    aggregates = []
    for a in query.aggregates:
        item: dict[str, Any] = {"kind": str(a.kind)}
        if a.column is not None:
            item["column"] = a.column
        if a.q is not None:
            item["q"] = a.q
        if a.bins is not None:
            item["bins"] = a.bins
        aggregates.append(item)
    doc: dict[str, Any] = {"aggregates": aggregates}
    if query.group_by:
        doc["group_by"] = list(query.group_by)
    if query.where:
        doc["where"] = [
            {
                "column": f.column,
                "op": str(f.op),
                "value": list(f.value) if isinstance(f.value, tuple) else f.value,
            }
            for f in query.where
        ]
    return doc


if __name__ == "__main__":  # pragma: no cover - regenerates docs/query.schema.json
    print(schema_text(), end="")
