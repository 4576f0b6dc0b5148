"""What a tier-2 table will release, said before it runs: its rules and its accuracy.

Computed from the declaration only (declared bounds, the privacy unit), never from the
data: the perturbation of ``analytics.cellkey`` scales with each cell's own largest
contribution, which stays private, so the preview gives its bound from the declared
bounds (rows as units) and the scale in words otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from analytics import cellkey
from analytics.schema import AggregateKind, DatasetSchema
from analytics.sdc import PLATFORM_MIN_COUNT, SdcRules, TableQuery, validate_table_query


@dataclass(frozen=True)
class CellAccuracy:
    """How far one aggregate's released values may be from the true ones.

    ``max_error``: a bound that holds for every released cell (None where it depends on
    how many rows one individual has, which no declaration bounds); ``mean_abs_error``:
    the expected absolute error's bound, likewise; ``note``: the same in words.
    """

    aggregate: str
    max_error: float | None
    mean_abs_error: float | None
    note: str


def preview_table(schema: DatasetSchema, query: TableQuery, rules: SdcRules) -> dict[str, Any]:
    """The rules, the perturbation and each aggregate's accuracy, as JSON-ready values."""
    validate_table_query(schema, query)
    return {
        "rules": asdict(rules),
        "perturbation": cellkey.statement(),
        "aggregates": [asdict(_accuracy(schema, a.kind, a.column)) for a in query.aggregates],
        "review": "released without review: the rules and the perturbation are automatic",
        "notes": [
            "cells are perturbed independently, so a table's cells need not add up to its "
            "total or to another table's cells",
            f"released counts are never below {PLATFORM_MIN_COUNT}; suppressed cells show "
            "no values",
        ],
    }


def _accuracy(schema: DatasetSchema, kind: AggregateKind, column: str | None) -> CellAccuracy:
    per_row = schema.privacy_unit.id_column is None
    count = cellkey.COUNT_PTABLE[-1]
    d, s = cellkey.MAX_COUNT_PERTURBATION, cellkey.MAX_SUM_PERTURBATION
    if column is None:
        if per_row:
            note = f"within ±{d} of the true count (±{float(count.mean_abs):g} on average)"
            return CellAccuracy("count", d, float(count.mean_abs), note)
        note = f"within ±{d} x the most rows one individual has in the cell"
        return CellAccuracy("count", None, None, note)
    spec = schema.column(column)
    bound = max(abs(spec.lower or 0.0), abs(spec.upper or 0.0))
    label = f"{kind}({column})"
    largest = "the largest value in the cell" if per_row else "the largest total of one individual"
    if kind is AggregateKind.SUM:
        note = f"within ±{s:g} x {largest} ({s / 2:g} x on average)"
        if not per_row:
            return CellAccuracy(label, None, None, note)
        return CellAccuracy(label, s * bound, s / 2 * bound, f"{note}; at most ±{s * bound:g}")
    worst = (s + d) * bound / PLATFORM_MIN_COUNT
    note = (
        f"the perturbed sum over the perturbed count of values n (at least "
        f"{PLATFORM_MIN_COUNT}): within ±({s:g} x {largest} + {d} x |mean|) / n"
    )
    if not per_row:
        return CellAccuracy(label, None, None, note)
    return CellAccuracy(label, worst, None, f"{note}; at most ±{worst:g}")
