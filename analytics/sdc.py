"""Tier 2: aggregate tables, perturbed by the cell-key method and checked by ACRO's rules.

A provider asks for counts, sums and means, grouped by up to four allowed columns.  Every
released value is perturbed by the cell-key method (``analytics.cellkey``: the same cell
always gets the same value, for every table, provider and dataset version, and any sum or
difference of cells carries noise), and unsafe cells are suppressed (all their values
become None) and marked with why.  The rules are ACRO's defaults (AI-SDC/ACRO
``acro/default.yaml``): threshold 10, nk-dominance n=2 k=0.90, zeros disclosive; they are
evaluated on the true values.

A privacy unit ("unit" below) is one row, or, when the schema names an id column, one id
with all its rows.  Cells are checked in this order:

1. **Zero cell.**  No rows: suppressed ("zero cell") when ``zeros_disclosive`` (ACRO: a
   zero reveals that nobody has that combination), else released as 0.
2. **Threshold.**  Fewer than ``min_count`` units in the cell, or (as ACRO counts
   non-missing values) fewer than ``min_count`` units with a non-null value in a summed
   column: suppressed.
3. **nk-dominance**, per summed column (sum or mean): each unit's contribution is the sum
   of its non-null values in the cell; if the ``nk_n`` largest absolute contributions
   exceed ``nk_k`` times the sum of all absolute contributions, the cell is suppressed.
   Absolute values, so that a large negative value counts.

Released values (``analytics.cellkey`` states the method and its parameters): a count
moves by at most 2 (times the most rows one unit has in the cell, with an id column) and
never below the platform's floor of 10; a sum by less than 2 times the cell's largest
absolute unit contribution; a mean is the perturbed sum over the perturbed number of
values.  So differencing -- subtracting or adding released cells of any number of tables,
by any number of providers, over any versions, to isolate a few units -- yields those
units' values only with the noise of every cell used.  No earlier release is consulted:
the same query gives the same table whatever was asked before.

Cells: when every group column is a public string column with declared categories (plus
``""`` for a nullable one), the table has a cell for every combination, so empty
combinations are not revealed by their absence; otherwise only observed combinations, and
suppressed cells keyed by a non-public column are left out entirely, so that rare values
of it are not shown.  Keys are strings: integers in decimal, booleans ``true``/``false``,
empty (null) as ``""`` (ingestion stores no empty strings).  Order: declared categories'
order, else sorted values.  Values: ``count`` counts rows; ``sum`` and ``mean`` ignore
nulls (``mean`` = sum over non-null values / their number).

What this does **not** protect against:

* averaging many *different* derivations of one figure: every table whose cells add up to
  it in another way brings fresh noise, so n of them narrow it by about the square root
  of n (the number of tables with different cells is limited by the columns one may group
  by, at most four at a time);
* attribute disclosure within safe cells (everyone in a cell has the same value: the mean
  shows it, up to the perturbation), and ACRO's p-ratio rule, which is not applied;
* in observed-key tables, absent keys still show that their cells are empty;
* other channels (DP tiers, mock data, outputs of tier-5 jobs) combined with these tables.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import polars as pl

from analytics.cellkey import cell_key, key_halves, perturb_count, perturb_sum, record_keys
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
)
from i18n import Msg

PLATFORM_MIN_COUNT: Final = 10
MAX_AGGREGATES: Final = 8
MAX_GROUP_COLUMNS: Final = 4
MAX_CELLS: Final = 10_000
_KINDS: Final = (AggregateKind.COUNT, AggregateKind.SUM, AggregateKind.MEAN)
_RELEASABLE: Final = (ColumnClass.PUBLIC, ColumnClass.INTERNAL)
_KEY_TYPES: Final = (ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN)
# Internal frame columns; "#" is never in a declared name, so they cannot collide.
_ALL, _UNIT, _ROWS, _UNITS, _MOST = "#all", "#unit", "#rows", "#units", "#most"
_HIGH, _LOW = "#key_high", "#key_low"  # the halves of the record keys, summed per cell


class SdcQueryError(ValueError):
    """A table query this schema does not allow; names the column and what is expected."""


@dataclass(frozen=True)
class SdcRules:
    """ACRO's default rules; ``min_count`` may be raised, never set below the platform floor."""

    min_count: int = 10
    nk_n: int = 2
    nk_k: float = 0.9
    zeros_disclosive: bool = True

    def __post_init__(self) -> None:
        _check_rules(self)


@dataclass(frozen=True)
class TableQuery:
    """Counts (column None), sums and means, grouped by up to four columns."""

    aggregates: tuple[Aggregate, ...]
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableCell:
    """One cell: its key, its values (None when suppressed), "ok" or "suppressed", and why.

    ``perturbed``: its values are perturbed by the cell-key method (every released cell
    that has units; an empty cell released as 0 has nothing to perturb).
    """

    key: dict[str, str]
    values: dict[str, float | None]
    status: str
    reasons: tuple[str, ...]
    perturbed: bool = False


@dataclass(frozen=True)
class TableRelease:
    """The checked, perturbed table and the rules applied."""

    cells: tuple[TableCell, ...]
    rules: SdcRules


def _check_rules(rules: SdcRules) -> None:
    if type(rules.min_count) is not int or rules.min_count < PLATFORM_MIN_COUNT:
        raise ValueError(f"min_count: expected an integer of at least {PLATFORM_MIN_COUNT}")
    if type(rules.nk_n) is not int or rules.nk_n < 1:
        raise ValueError("nk_n: expected an integer of at least 1")
    if not isinstance(rules.nk_k, int | float) or not 0.0 < rules.nk_k < 1.0:
        raise ValueError("nk_k: expected a number between 0 and 1 (exclusive)")
    if not isinstance(rules.zeros_disclosive, bool):
        raise ValueError("zeros_disclosive: expected true or false")


DEFAULT_RULES: Final = SdcRules()


# ---------------------------------------------------------------- validation


def validate_table_query(schema: DatasetSchema, query: TableQuery) -> None:
    """Raise SdcQueryError unless ``schema`` allows ``query`` as an SDC-checked table."""
    if not 1 <= len(query.aggregates) <= MAX_AGGREGATES:
        raise SdcQueryError(
            Msg(
                "aggregates: expected 1 to {max_aggregates} of them",
                max_aggregates=MAX_AGGREGATES,
            )
        )
    labels = [_label(_check_aggregate(schema, a)) for a in query.aggregates]
    if len(set(labels)) != len(labels):
        raise SdcQueryError(Msg("aggregates: expected each aggregate once"))
    if len(query.group_by) > MAX_GROUP_COLUMNS:
        raise SdcQueryError(
            Msg(
                "group_by: expected at most {max_group_columns} columns",
                max_group_columns=MAX_GROUP_COLUMNS,
            )
        )
    if len(set(query.group_by)) != len(query.group_by):
        raise SdcQueryError(Msg("group_by: expected each column once"))
    for name in query.group_by:
        spec = _releasable(schema, name)
        if spec.type not in _KEY_TYPES:
            raise SdcQueryError(
                Msg(
                    "column {name}: expected a string, integer or boolean key",
                    name=repr(name),
                )
            )
        if name == schema.privacy_unit.id_column:
            raise SdcQueryError(
                Msg(
                    "column {name}: expected a key other than the privacy-unit id",
                    name=repr(name),
                )
            )
    grid = _grid(schema, query.group_by)
    if grid is not None and math.prod(len(values) for values in grid) > MAX_CELLS:
        raise SdcQueryError(
            Msg(
                "group_by: expected at most {max_cells} category combinations",
                max_cells=MAX_CELLS,
            )
        )


def _check_aggregate(schema: DatasetSchema, aggregate: Aggregate) -> Aggregate:
    kind = aggregate.kind
    if kind not in _KINDS:
        raise SdcQueryError(
            Msg(
                "aggregate {kind}: expected count, sum or mean",
                kind=repr(str(kind)),
            )
        )
    if aggregate.q is not None or aggregate.bins is not None:
        raise SdcQueryError(
            Msg(
                "aggregate {kind}: expected no q or bins",
                kind=repr(str(kind)),
            )
        )
    if kind is AggregateKind.COUNT:
        if aggregate.column is not None:
            raise SdcQueryError(Msg("count: expected no column (it counts rows)"))
        return aggregate
    if aggregate.column is None:
        raise SdcQueryError(
            Msg(
                "{kind}: expected a column",
                kind=kind,
            )
        )
    if not _releasable(schema, aggregate.column).is_numeric:
        raise SdcQueryError(
            Msg(
                "column {column}: expected a numeric column for {kind}",
                column=repr(aggregate.column),
                kind=kind,
            )
        )
    return aggregate


def _releasable(schema: DatasetSchema, name: str) -> ColumnSpec:
    """The declared column, if its class allows SDC-checked aggregates."""
    try:
        spec = schema.column(name)
    except KeyError:
        raise SdcQueryError(
            Msg(
                "column {name}: expected a declared column",
                name=repr(name[:64]),
            )
        ) from None
    if spec.column_class is ColumnClass.CONFIDENTIAL:
        raise SdcQueryError(
            Msg(
                "column {name} is confidential: only DP tiers (3 to 5)",
                name=repr(name),
            )
        )
    if spec.column_class not in _RELEASABLE:
        raise SdcQueryError(
            Msg(
                "column {name} is secret: never released, not even aggregated",
                name=repr(name),
            )
        )
    return spec


def _label(aggregate: Aggregate) -> str:
    return "count" if aggregate.column is None else f"{aggregate.kind}({aggregate.column})"


def _domain(spec: ColumnSpec) -> tuple[str, ...] | None:
    """A public column's declared key values (``""``: empty), or None if not declared."""
    if spec.column_class is not ColumnClass.PUBLIC or not spec.categories:
        return None
    return (*spec.categories, *([""] if spec.nullable else []))


def _grid(schema: DatasetSchema, group_by: Sequence[str]) -> list[tuple[str, ...]] | None:
    """Each group column's key values, when all are declared public categories; else None."""
    domains = [_domain(schema.column(name)) for name in group_by]
    return None if None in domains else [d for d in domains if d is not None]


# ---------------------------------------------------------------- statistics


class _Summed(NamedTuple):
    """One summed column within one cell; also names its statistics' frame columns."""

    total: float  # sum of non-null values
    values: float  # non-null rows
    units: float  # units with a non-null value
    top: float  # the nk_n largest absolute unit contributions, added up
    absolute: float  # all absolute unit contributions, added up
    largest: float  # the largest absolute unit contribution (scales the perturbation)
    most: float  # the most non-null values one unit has


@dataclass
class _Draft:
    """A cell being checked; ``reasons`` grows as checks fail."""

    key: tuple[str, ...]
    rows: int
    units: int
    most_rows: int  # the most rows one unit has in the cell
    cell_key: int
    summed: dict[str, _Summed]
    reasons: list[str] = field(default_factory=list)


def _key_expr(spec: ColumnSpec) -> pl.Expr:
    """A column's values as key strings; null (and an empty string) as ""."""
    column = pl.col(spec.name)
    text: pl.Expr
    if spec.type is ColumnType.BOOLEAN:
        text = pl.when(column).then(pl.lit("true")).when(~column).then(pl.lit("false"))
    else:
        text = column.cast(pl.String)
    return text.fill_null("")


def _drafts(
    frame: pl.DataFrame, schema: DatasetSchema, query: TableQuery, n: int, secret: bytes
) -> list[_Draft]:
    """One draft per cell, in output order, with its counts, cell key and statistics."""
    group, summed = list(query.group_by), _summed_columns(query)
    by = group or [_ALL]
    unit = schema.privacy_unit.id_column
    high, low = key_halves(record_keys(frame, schema, secret))
    keyed = frame.select(
        *[_key_expr(schema.column(g)).alias(g) for g in group],
        *([] if group else [pl.lit("").alias(_ALL)]),
        (pl.col(unit) if unit else pl.int_range(pl.len())).alias(_UNIT),
        *[pl.col(c).alias(f"#v{i}") for i, c in enumerate(summed)],
    ).with_columns(pl.Series(_HIGH, high), pl.Series(_LOW, low))
    # Stage 1: one row per (cell, unit), so that dominance compares units, not rows.
    per_unit = _per_unit(keyed, by, len(summed), by_id=unit is not None)
    stats = per_unit.group_by(by).agg(
        pl.col(_ROWS).sum(),
        pl.len().alias(_UNITS),
        pl.col(_ROWS).max().alias(_MOST),
        pl.col(_HIGH).sum(),
        pl.col(_LOW).sum(),
        *_summed_stats(len(summed), n),
    )
    grid = _grid(schema, group) if group else [("",)]
    if grid is not None:
        stats = _on_grid(stats, by, grid)
    drafts = [_draft(row, group, summed) for row in stats.to_dicts()]
    if grid is None:
        if len(drafts) > MAX_CELLS:
            raise SdcQueryError(
                Msg(
                    "group_by: expected at most {max_cells} cells; use fewer keys",
                    max_cells=MAX_CELLS,
                )
            )
        drafts.sort(key=lambda d: _sort_key(d.key, [schema.column(g) for g in group]))
    return drafts


def _per_unit(keyed: pl.DataFrame, by: list[str], summed: int, *, by_id: bool) -> pl.DataFrame:
    """Each unit's rows, sums and non-null counts per cell (a row is its own unit, as is)."""
    values = [pl.col(f"#v{i}") for i in range(summed)]
    if not by_id:  # no grouping needed: a row's sum is its value, its count 0 or 1
        return keyed.with_columns(
            pl.lit(1, dtype=pl.UInt32).alias(_ROWS),
            *[v.fill_null(0).alias(f"#s{i}") for i, v in enumerate(values)],
            *[v.is_not_null().cast(pl.UInt32).alias(f"#n{i}") for i, v in enumerate(values)],
        )
    return keyed.group_by([*by, _UNIT]).agg(
        pl.len().alias(_ROWS),
        pl.col(_HIGH).first(),  # every row of an id has its key
        pl.col(_LOW).first(),
        *[v.sum().alias(f"#s{i}") for i, v in enumerate(values)],
        *[v.count().alias(f"#n{i}") for i, v in enumerate(values)],
    )


def _summed_columns(query: TableQuery) -> list[str]:
    return list(dict.fromkeys(a.column for a in query.aggregates if a.column is not None))


def _summed_stats(count: int, n: int) -> list[pl.Expr]:
    exprs = []
    for i in range(count):
        contribution = pl.col(f"#s{i}").cast(pl.Float64).abs()
        exprs += [
            pl.col(f"#s{i}").sum().alias(f"#total{i}"),
            pl.col(f"#n{i}").sum().alias(f"#values{i}"),
            (pl.col(f"#n{i}") > 0).sum().alias(f"#units{i}"),
            contribution.top_k(n).sum().alias(f"#top{i}"),
            contribution.sum().alias(f"#absolute{i}"),
            contribution.max().alias(f"#largest{i}"),
            pl.col(f"#n{i}").max().alias(f"#most{i}"),
        ]
    return exprs


def _on_grid(stats: pl.DataFrame, by: list[str], grid: list[tuple[str, ...]]) -> pl.DataFrame:
    """Every combination of declared keys, in declared order; empty ones with zeros."""
    combos = pl.DataFrame(list(itertools.product(*grid)), schema=by, orient="row")
    if stats.join(combos, on=by, how="anti").height:
        # The frame does not match its declaration (ingestion would have refused it).
        raise ValueError(f"group_by {by}: found values outside the declared categories")
    full = combos.join(stats, on=by, how="left", maintain_order="left")
    return full.with_columns(pl.exclude(by).fill_null(0))


def _draft(row: dict[str, object], group: list[str], summed: list[str]) -> _Draft:
    def number(name: str) -> float:
        value = row[name]
        return float(value) if isinstance(value, int | float) else 0.0

    def whole(name: str) -> int:  # exact: a float loses key bits past 2**53
        value = row[name]
        return value if isinstance(value, int) else 0

    return _Draft(
        key=tuple(str(row[g]) for g in group),
        rows=whole(_ROWS),
        units=whole(_UNITS),
        most_rows=whole(_MOST),
        cell_key=cell_key(whole(_HIGH), whole(_LOW)),
        summed={
            c: _Summed(*(number(f"#{stat}{i}") for stat in _Summed._fields))
            for i, c in enumerate(summed)
        },
    )


def _sort_key(key: tuple[str, ...], specs: list[ColumnSpec]) -> tuple[tuple[bool, int, str], ...]:
    """Sort observed keys by value (integers numerically), the empty key last."""
    return tuple(
        (v == "", int(v) if v and s.type is ColumnType.INTEGER else 0, v)
        for v, s in zip(key, specs, strict=True)
    )


# ---------------------------------------------------------------- checks and release


def run_table_query(
    frame: pl.DataFrame,
    schema: DatasetSchema,
    query: TableQuery,
    rules: SdcRules = DEFAULT_RULES,
    *,
    secret: bytes,
) -> TableRelease:
    """Compute ``query`` on ``frame``, suppress every cell the rules call unsafe and perturb
    the others by the cell-key method under the dataset's ``secret`` (32 bytes)."""
    validate_table_query(schema, query)
    _check_rules(rules)
    missing = [c for c in schema.names if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing}: expected in the frame (declared)")
    drafts = _drafts(frame, schema, query, rules.nk_n, secret)
    units = "rows" if schema.privacy_unit.id_column is None else "individuals"
    for draft in drafts:
        draft.reasons += _primary_reasons(draft, rules, units)
    return _release(drafts, schema, query, rules)


def _primary_reasons(draft: _Draft, rules: SdcRules, units: str) -> list[str]:
    """Zero cell, threshold and nk-dominance, as in ACRO."""
    m = rules.min_count
    if draft.rows == 0:
        # A non-disclosive zero is released as it is: it has nothing to threshold or dominate.
        return ["zero cell"] if rules.zeros_disclosive else []
    if draft.units < m:
        return [f"fewer than {m} {units}"]
    reasons = []
    for column, stats in draft.summed.items():
        if stats.units < m:
            reasons.append(f"fewer than {m} {units} with a value in {column!r}")
        elif stats.absolute > 0 and stats.top > rules.nk_k * stats.absolute:
            largest = "largest contribution is" if rules.nk_n == 1 else "largest contributions are"
            share = f"{rules.nk_k * 100:g}%"
            reasons.append(
                f"dominance: {rules.nk_n} {largest} over {share} of the sum of {column!r}"
            )
    return reasons


def _release(
    drafts: list[_Draft], schema: DatasetSchema, query: TableQuery, rules: SdcRules
) -> TableRelease:
    """The table as released: perturbed values of safe cells, no values of the others."""
    group = query.group_by
    # A suppressed observed key of a non-public column would show a rare value: leave it out.
    hide_keys = any(schema.column(g).column_class is not ColumnClass.PUBLIC for g in group)
    cells = []
    for draft in drafts:
        key = dict(zip(group, draft.key, strict=True))
        if draft.reasons:
            if not hide_keys:
                values = dict.fromkeys(map(_label, query.aggregates))
                cells.append(TableCell(key, values, "suppressed", tuple(draft.reasons)))
            continue
        values = {_label(a): _value(a, draft, schema) for a in query.aggregates}
        cells.append(TableCell(key, values, "ok", (), perturbed=draft.rows > 0))
    return TableRelease(tuple(cells), rules)


def _value(aggregate: Aggregate, draft: _Draft, schema: DatasetSchema) -> float | None:
    """The released value: perturbed from the true statistics (mean: from perturbed ones)."""
    floor = PLATFORM_MIN_COUNT  # not the grant's minimum: the same cell, the same value
    if aggregate.column is None:
        return float(perturb_count(draft.rows, draft.most_rows, draft.cell_key, floor))
    stats, spec = draft.summed[aggregate.column], schema.column(aggregate.column)
    bound = max(abs(spec.lower or 0.0), abs(spec.upper or 0.0))
    total = perturb_sum(stats.total, stats.largest, draft.cell_key, spec.name, bound)
    if aggregate.kind is AggregateKind.SUM:
        return total
    values = perturb_count(int(stats.values), int(stats.most), draft.cell_key, floor)
    return total / values if values else None
