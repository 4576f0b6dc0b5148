"""A source's mapping: its fields onto the dataset's declared columns, without code.

A mapping is JSON, one entry per declared column::

    {"columns": {
        "machine":       {"field": "equipment_no"},
        "temperature_c": {"field": "temp_f", "scale": 0.5555555556, "offset": -17.7777777778},
        "plant":         {"constant": "plant-2"}
    }}

``field`` names the source's field (renamed to the column); ``scale`` and ``offset`` turn a
number into the declared unit (``value * scale + offset``: °F to °C, ms to s); ``constant``
fills the column with one value. A nullable column may be left out (empty). Sources from
different vendors, each with its own mapping, land in the same declaration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from analytics.schema import ColumnType, DatasetSchema
from i18n import Msg

_ENTRY_KEYS = frozenset({"field", "constant", "scale", "offset"})


class MappingProblem(ValueError):
    """The mapping does not fit the declaration, or the source's rows do not fit the mapping.
    ``problems``: one message per problem, naming the column or field, never a value."""

    def __init__(self, headline: Msg, problems: list[str]) -> None:
        super().__init__(headline)
        self.problems = problems


def check_mapping(mapping: object, schema: DatasetSchema) -> dict[str, Any]:
    """The mapping in its stored form; raises ``MappingProblem`` listing what does not fit."""
    problems: list[str] = []
    columns = mapping.get("columns") if isinstance(mapping, dict) else None
    if not isinstance(columns, dict):
        raise MappingProblem(
            Msg('a mapping is a JSON object {"columns": {column: {"field": ...}}}'), []
        )
    declared = {c.name: c for c in schema.columns}
    problems += [f"{name}: not a declared column" for name in columns if name not in declared]
    stored: dict[str, Any] = {}
    for spec in schema.columns:
        entry = columns.get(spec.name)
        if entry is None:
            if not spec.nullable:
                problems.append(f"{spec.name}: not mapped (only nullable columns may be left out)")
            continue
        found = _entry_problems(entry, spec.type)
        problems += [f"{spec.name}: {p}" for p in found]
        if not found:
            stored[spec.name] = dict(entry)
    if problems:
        raise MappingProblem(Msg("the mapping does not fit the dataset's declaration"), problems)
    return {"columns": stored}


def _entry_problems(entry: object, column_type: ColumnType) -> list[str]:
    if not isinstance(entry, dict):
        return ['an object with "field" or "constant"']
    problems = [f"unknown key {k!r}" for k in sorted(set(entry) - _ENTRY_KEYS)]
    if ("field" in entry) == ("constant" in entry):
        problems.append('exactly one of "field" and "constant"')
    field = entry.get("field")
    if "field" in entry and not (isinstance(field, str) and 1 <= len(field) <= 200):
        problems.append("field: the source field's name (1-200 characters)")
    constant = entry.get("constant")
    if "constant" in entry and not isinstance(constant, str | int | float | bool):
        problems.append("constant: text, a number or true/false")
    for key in ("scale", "offset"):
        if key not in entry:
            continue
        value = entry[key]
        if column_type not in (ColumnType.INTEGER, ColumnType.FLOAT):
            problems.append(f"{key}: only for numeric columns")
        elif not _finite(value) or "field" not in entry:
            problems.append(f"{key}: a finite number, applied to a field")
    return problems


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fields_of(mapping: Mapping[str, Any]) -> set[str]:
    """The source fields the mapping reads."""
    return {e["field"] for e in mapping["columns"].values() if "field" in e}


def apply_mapping(
    rows: pl.DataFrame, mapping: Mapping[str, Any], schema: DatasetSchema
) -> pl.DataFrame:
    """The source's rows as the declared columns, in declared order, before validation
    (``sandbox.ingest`` then checks every value, as for an upload)."""
    missing = sorted(fields_of(mapping) - set(rows.columns))
    if missing:
        raise MappingProblem(
            Msg("the source gave no field that the mapping names; correct the mapping"),
            [f"{name}: no such field in the source's rows" for name in missing],
        )
    entries = mapping["columns"]
    exprs = []
    for spec in schema.columns:
        entry = entries.get(spec.name)
        if entry is None:
            exprs.append(pl.lit(None, dtype=pl.String).alias(spec.name))
        elif "constant" in entry:
            exprs.append(pl.lit(entry["constant"]).alias(spec.name))
        elif "scale" in entry or "offset" in entry:
            number = pl.col(entry["field"]).cast(pl.Float64, strict=False)
            scaled = number * float(entry.get("scale", 1.0)) + float(entry.get("offset", 0.0))
            if spec.type is ColumnType.INTEGER:
                scaled = scaled.round(0)  # a whole unit after scaling (ms -> s rounds)
            exprs.append(scaled.alias(spec.name))
        else:
            exprs.append(pl.col(entry["field"]).alias(spec.name))
    return rows.select(exprs)
