"""Tier 2: exact aggregate tables, released only after statistical disclosure control.

A provider asks for counts, sums and means, grouped by up to four allowed columns.
Values are exact (no noise); unsafe cells are suppressed (all their values become
None) and marked with why.  The rules are ACRO's defaults (AI-SDC/ACRO
``acro/default.yaml``): threshold 10, nk-dominance n=2 k=0.90, zeros disclosive.

A privacy unit ("unit" below) is one row, or, when the schema names an id column,
one id with all its rows.  Cells are checked in this order:

1. **Zero cell.**  No rows: suppressed ("zero cell") when ``zeros_disclosive``
   (ACRO: a zero reveals that nobody has that combination), else released as 0.
2. **Threshold.**  Fewer than ``min_count`` units in the cell, or (as ACRO counts
   non-missing values) fewer than ``min_count`` units with a non-null value in a
   summed column: suppressed.
3. **nk-dominance**, per summed column (sum or mean): each unit's contribution is
   the sum of its non-null values in the cell; if the ``nk_n`` largest absolute
   contributions exceed ``nk_k`` times the sum of all absolute contributions, the
   cell is suppressed.  Absolute values, so that a large negative value counts.
4. **Differencing.**  Whoever holds two released cells whose rows differ by a few
   units can subtract them.  Queries have no filters, so a cell's rows are those
   meeting its conditions, and a cell with more conditions holds a subset of the
   rows of one with fewer.  A cell C is suppressed if, among the earlier released
   cells (``prior``, which must record every release):
   (a) a same-version cell E has nested conditions (E's ⊂ C's or C's ⊂ E's) and
   the rows of the larger that are not in the smaller hold 1 to ``min_count - 1``
   units, counted on the current frame (same version: same data);
   (b) a cell E of another version has C's conditions exactly, and its stored row
   count (or, both known, its id count) differs from C's by 1 to ``min_count - 1``;
   (c) same-version cells split C by one more column (each has C's conditions
   plus one ``column=value``), and C minus them would reveal the unreleased part
   of the split, by the rule of 5 below: its cells are the column's declared keys
   (or, undeclared, those in C's rows now) that are not among them; C is suppressed
   if there is one such cell, or they hold fewer than ``min_count`` units together
   (none at all only counts when ``zeros_disclosive``: then they are zero cells).
5. **Secondary suppression.**  A line is the cells sharing all keys but one (a
   row or column of a cross table; the whole of a one-way table).  Its total is
   known to the provider if an earlier released cell has exactly the line's
   shared conditions (any version, to be safe).  Then total minus the released
   cells is the sum of the suppressed ones; if that is one cell, or several with
   fewer than ``min_count`` units together, the line's smallest released non-empty
   cell is suppressed too ("secondary suppression").  Repeated until nothing
   changes, since one suppression can expose a crossing line.

Cells: when every group column is a public string column with declared categories
(plus ``""`` for a nullable one), the table has a cell for every combination, so
empty combinations are not revealed by their absence; otherwise only observed
combinations, and suppressed cells keyed by a non-public column are left out
entirely, so that rare values of it are not shown.  Keys are strings: integers
in decimal, booleans ``true``/``false``, empty (null) as ``""`` (ingestion stores
no empty strings).  Order: declared categories' order, else sorted values.
Values: ``count`` counts rows; ``sum`` and ``mean`` ignore nulls (``mean`` = sum
over non-null values / their number).

What this does **not** protect against:

* differencing beyond the patterns above (a pair of nested cells, a cell and one
  earlier split of it by one column, a line and a total held in one earlier
  cell): e.g. totals only derivable by adding cells of several releases, splits
  by two columns at once, chains of three or more releases, and cells of other
  versions unless their conditions are identical;
* dominance within a difference: two cells may differ by ``min_count`` units or
  more, one of which dominates the difference of their sums;
* a new version that adds and removes about as many rows in a cell (the net
  change hides them), or adds many rows of ids that the cell already had;
* releases not recorded in ``prior``, and other channels (DP tiers, mock data,
  outputs of jobs) combined with these tables;
* attribute disclosure within safe cells (everyone in a cell has the same value:
  the mean shows it), and ACRO's p-ratio rule, which is not applied;
* in observed-key tables, absent keys still show that their cells are empty.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import polars as pl

from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
)

PLATFORM_MIN_COUNT: Final = 10
MAX_AGGREGATES: Final = 8
MAX_GROUP_COLUMNS: Final = 4
MAX_CELLS: Final = 10_000
_KINDS: Final = (AggregateKind.COUNT, AggregateKind.SUM, AggregateKind.MEAN)
_RELEASABLE: Final = (ColumnClass.PUBLIC, ColumnClass.INTERNAL)
_KEY_TYPES: Final = (ColumnType.STRING, ColumnType.INTEGER, ColumnType.BOOLEAN)
# Internal frame columns; "#" is never in a declared name, so they cannot collide.
_ALL, _UNIT, _ROWS, _UNITS = "#all", "#unit", "#rows", "#units"


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
class PriorCell:
    """A cell released earlier on the same dataset (by any provider); internal, never shown.

    ``conditions`` maps group columns to key values as released ({} = whole dataset);
    ``count`` is its true row count then; ``units`` its distinct ids, when the dataset
    has an id column (None otherwise, or if unknown).
    """

    conditions: Mapping[str, str]
    same_version: bool
    count: int
    units: int | None = None


@dataclass(frozen=True)
class TableCell:
    """One cell: its key, its values (None when suppressed), "ok" or "suppressed", and why."""

    key: dict[str, str]
    values: dict[str, float | None]
    status: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class TableRelease:
    """The checked table; ``released`` holds the cells released now, to store as prior cells."""

    cells: tuple[TableCell, ...]
    rules: SdcRules
    released: tuple[PriorCell, ...]


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
        raise SdcQueryError(f"aggregates: expected 1 to {MAX_AGGREGATES} of them")
    labels = [_label(_check_aggregate(schema, a)) for a in query.aggregates]
    if len(set(labels)) != len(labels):
        raise SdcQueryError("aggregates: expected each aggregate once")
    if len(query.group_by) > MAX_GROUP_COLUMNS:
        raise SdcQueryError(f"group_by: expected at most {MAX_GROUP_COLUMNS} columns")
    if len(set(query.group_by)) != len(query.group_by):
        raise SdcQueryError("group_by: expected each column once")
    for name in query.group_by:
        spec = _releasable(schema, name)
        if spec.type not in _KEY_TYPES:
            raise SdcQueryError(f"column {name!r}: expected a string, integer or boolean key")
        if name == schema.privacy_unit.id_column:
            raise SdcQueryError(f"column {name!r}: expected a key other than the privacy-unit id")
    grid = _grid(schema, query.group_by)
    if grid is not None and math.prod(len(values) for values in grid) > MAX_CELLS:
        raise SdcQueryError(f"group_by: expected at most {MAX_CELLS} category combinations")


def _check_aggregate(schema: DatasetSchema, aggregate: Aggregate) -> Aggregate:
    kind = aggregate.kind
    if kind not in _KINDS:
        raise SdcQueryError(f"aggregate {str(kind)!r}: expected count, sum or mean")
    if aggregate.q is not None or aggregate.bins is not None:
        raise SdcQueryError(f"aggregate {str(kind)!r}: expected no q or bins")
    if kind is AggregateKind.COUNT:
        if aggregate.column is not None:
            raise SdcQueryError("count: expected no column (it counts rows)")
        return aggregate
    if aggregate.column is None:
        raise SdcQueryError(f"{kind}: expected a column")
    if not _releasable(schema, aggregate.column).is_numeric:
        raise SdcQueryError(f"column {aggregate.column!r}: expected a numeric column for {kind}")
    return aggregate


def _releasable(schema: DatasetSchema, name: str) -> ColumnSpec:
    """The declared column, if its class allows SDC-checked aggregates."""
    try:
        spec = schema.column(name)
    except KeyError:
        raise SdcQueryError(f"column {name[:64]!r}: expected a declared column") from None
    if spec.column_class is ColumnClass.CONFIDENTIAL:
        raise SdcQueryError(f"column {name!r} is confidential: only DP tiers (3–5)")  # noqa: RUF001
    if spec.column_class not in _RELEASABLE:
        raise SdcQueryError(f"column {name!r} is secret: never released, not even aggregated")
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


@dataclass
class _Draft:
    """A cell being checked; ``reasons`` grows as checks fail."""

    key: tuple[str, ...]
    rows: int
    units: int
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


def _drafts(frame: pl.DataFrame, schema: DatasetSchema, query: TableQuery, n: int) -> list[_Draft]:
    """One draft per cell, in output order, with its counts and summed-column statistics."""
    group, summed = list(query.group_by), _summed_columns(query)
    by = group or [_ALL]
    unit = schema.privacy_unit.id_column
    keyed = frame.select(
        *[_key_expr(schema.column(g)).alias(g) for g in group],
        *([] if group else [pl.lit("").alias(_ALL)]),
        (pl.col(unit) if unit else pl.int_range(pl.len())).alias(_UNIT),
        *[pl.col(c).alias(f"#v{i}") for i, c in enumerate(summed)],
    )
    # Stage 1: one row per (cell, unit), so that dominance compares units, not rows.
    per_unit = keyed.group_by([*by, _UNIT]).agg(
        pl.len().alias(_ROWS),
        *[pl.col(f"#v{i}").sum().alias(f"#s{i}") for i in range(len(summed))],
        *[pl.col(f"#v{i}").count().alias(f"#n{i}") for i in range(len(summed))],
    )
    stats = per_unit.group_by(by).agg(
        pl.col(_ROWS).sum(), pl.len().alias(_UNITS), *_summed_stats(len(summed), n)
    )
    grid = _grid(schema, group) if group else [("",)]
    if grid is not None:
        stats = _on_grid(stats, by, grid)
    drafts = [_draft(row, group, summed) for row in stats.to_dicts()]
    if grid is None:
        if len(drafts) > MAX_CELLS:
            raise SdcQueryError(f"group_by: expected at most {MAX_CELLS} cells; use fewer keys")
        drafts.sort(key=lambda d: _sort_key(d.key, [schema.column(g) for g in group]))
    return drafts


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

    return _Draft(
        key=tuple(str(row[g]) for g in group),
        rows=int(number(_ROWS)),
        units=int(number(_UNITS)),
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


# ---------------------------------------------------------------- checks


def run_table_query(
    frame: pl.DataFrame,
    schema: DatasetSchema,
    query: TableQuery,
    rules: SdcRules = DEFAULT_RULES,
    prior: Sequence[PriorCell] = (),
) -> TableRelease:
    """Compute ``query`` on ``frame`` exactly and suppress every cell the rules call unsafe.

    ``prior`` must hold every cell released earlier on this dataset (any provider);
    the differencing and secondary-suppression guards are only as good as it is.
    """
    validate_table_query(schema, query)
    _check_rules(rules)
    missing = [c for c in schema.names if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing}: expected in the frame (declared)")
    drafts = _drafts(frame, schema, query, rules.nk_n)
    for draft in drafts:
        draft.reasons += _primary_reasons(draft, rules, _unit_word(schema))
    guard = _Guard(frame, schema, query, prior, rules)
    for draft in drafts:
        if not draft.reasons:
            here = dict(zip(query.group_by, draft.key, strict=True))
            draft.reasons += guard.differencing(here, draft)
    _secondary(drafts, query.group_by, prior, rules.min_count)
    return _release(drafts, schema, query, rules)


def _unit_word(schema: DatasetSchema) -> str:
    return "rows" if schema.privacy_unit.id_column is None else "individuals"


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


_Conditions = Mapping[str, str]


class _Guard:
    """The differencing checks of one release against earlier released cells."""

    def __init__(
        self,
        frame: pl.DataFrame,
        schema: DatasetSchema,
        query: TableQuery,
        prior: Sequence[PriorCell],
        rules: SdcRules,
    ) -> None:
        self._schema, self._rules = schema, rules
        self._id = schema.privacy_unit.id_column
        self._cache: dict[tuple[frozenset[tuple[str, str]], ...], int] = {}
        # Same-version cells are recounted on this frame; cells naming a column this dataset
        # cannot key by cannot be, and are left out (same version means same declaration).
        self._same = [dict(p.conditions) for p in prior if p.same_version and self._keys(p)]
        self._other = [p for p in prior if not p.same_version]
        self._few = f"fewer than {rules.min_count} {_unit_word(schema)}"
        # Key strings are computed once: every check below filters on them.
        keys = sorted({c for cell in self._same for c in cell} | set(query.group_by))
        self._keyed = frame.select(
            *[_key_expr(schema.column(c)).alias(c) for c in keys],
            (pl.col(self._id) if self._id else pl.lit(0)).alias(_UNIT),
        )

    def differencing(self, here: _Conditions, draft: _Draft) -> list[str]:
        """Why releasing ``draft``, with conditions ``here``, would allow differencing, if so."""
        m = self._rules.min_count
        for there in self._same:
            nested = there.items() < here.items() or here.items() < there.items()
            if nested and 0 < self._between(there, here, draft) < m:  # (a) a few units apart
                return [f"differencing: differs from an earlier released cell by {self._few}"]
        for cell in self._other:  # (b) the same cell in another version, a few units apart
            gaps = [cell.count - draft.rows]
            if cell.units is not None and self._id is not None:
                gaps.append(cell.units - draft.units)
            if dict(cell.conditions) == here and any(0 < abs(g) < m for g in gaps):
                return [f"differencing: differs from an earlier released cell by {self._few}"]
        return self._uncovered(here)

    def _uncovered(self, here: _Conditions) -> list[str]:
        """(c) Earlier cells that split this one by one more column: is the rest exposed?"""
        children: dict[str, list[_Conditions]] = {}
        for there in self._same:
            extra = there.keys() - here.keys()
            if len(extra) == 1 and here.items() < there.items():
                children.setdefault(extra.pop(), []).append(there)
        for column, cells in children.items():
            left = self._outside(here, cells)
            # The cells of this split that were not released: suppressed, or (declared
            # keys only) empty.  C minus the released ones is their sum, as in _protect_line.
            missing = self._keys_in(here, column) - {c[column] for c in cells}
            one_or_few = len(missing) == 1 or left < self._rules.min_count
            if missing and one_or_few and (left > 0 or self._rules.zeros_disclosive):
                return ["differencing: earlier released cells within it would reveal others"]
        return []

    def _keys_in(self, here: _Conditions, column: str) -> set[str]:
        """The declared keys of ``column``, or else those it has in the rows meeting ``here``."""
        spec = self._schema.column(column)
        domain = _domain(spec)
        if domain is not None:
            return set(domain)
        return set(self._keyed.filter(self._where(here))[column].unique().to_list())

    def _between(self, there: _Conditions, here: _Conditions, draft: _Draft) -> int:
        """Units in the larger of two nested cells that are not in the smaller."""
        if self._id is None:  # rows: a difference of counts, one frame pass per earlier cell
            return abs(self._outside(there, []) - draft.rows)
        big, small = (there, here) if len(there) < len(here) else (here, there)
        return self._outside(big, [small])  # an id may have rows in both

    def _outside(self, meets: _Conditions, fails: Sequence[_Conditions]) -> int:
        """Units in the rows that meet ``meets`` and none of ``fails``, on this frame."""
        key = (frozenset(meets.items()), *(frozenset(f.items()) for f in fails))
        if key not in self._cache:
            where = self._where(meets)
            for other in fails:
                where = where & ~self._where(other)
            rows = self._keyed.filter(where)
            self._cache[key] = rows.height if self._id is None else rows[_UNIT].n_unique()
        return self._cache[key]

    def _where(self, conditions: _Conditions) -> pl.Expr:
        tests = [pl.col(c) == v for c, v in conditions.items()]
        return pl.all_horizontal(tests) if tests else pl.lit(True)

    def _keys(self, cell: PriorCell) -> bool:
        names = self._schema.names
        return all(
            c in names and self._schema.column(c).type in _KEY_TYPES for c in cell.conditions
        )


def _secondary(
    drafts: list[_Draft], group_by: Sequence[str], prior: Sequence[PriorCell], m: int
) -> None:
    """Suppress more cells where a known line total would reveal suppressed ones."""
    known = {frozenset(p.conditions.items()) for p in prior}
    changed = True
    while changed:  # each pass suppresses a cell or ends, so this ends
        changed = False
        for dim in range(len(group_by)):
            shared = [g for i, g in enumerate(group_by) if i != dim]
            lines: dict[tuple[str, ...], list[_Draft]] = {}
            for draft in drafts:
                lines.setdefault(draft.key[:dim] + draft.key[dim + 1 :], []).append(draft)
            for rest, line in lines.items():
                if frozenset(zip(shared, rest, strict=True)) in known:
                    changed |= _protect_line(line, m)


def _protect_line(line: list[_Draft], m: int) -> bool:
    """Suppress the smallest released non-empty cell if the suppressed ones are exposed."""
    hidden = [d for d in line if d.reasons]
    shown = [d for d in line if not d.reasons and d.rows > 0]
    exposed = len(hidden) == 1 or sum(d.units for d in hidden) < m
    if not (hidden and shown and exposed):
        return False
    min(shown, key=lambda d: d.units).reasons.append("secondary suppression")
    return True


def _release(
    drafts: list[_Draft], schema: DatasetSchema, query: TableQuery, rules: SdcRules
) -> TableRelease:
    """The table as released: values of safe cells, and safe cells as future prior cells."""
    group = query.group_by
    # A suppressed observed key of a non-public column would show a rare value: leave it out.
    hide_keys = any(schema.column(g).column_class is not ColumnClass.PUBLIC for g in group)
    per_id = schema.privacy_unit.id_column is not None
    cells, released = [], []
    for draft in drafts:
        key = dict(zip(group, draft.key, strict=True))
        if draft.reasons:
            if not hide_keys:
                values = dict.fromkeys(map(_label, query.aggregates))
                cells.append(TableCell(key, values, "suppressed", tuple(draft.reasons)))
            continue
        values = {_label(a): _value(a, draft) for a in query.aggregates}
        cells.append(TableCell(key, values, "ok", ()))
        released.append(PriorCell(dict(key), True, draft.rows, draft.units if per_id else None))
    return TableRelease(tuple(cells), rules, tuple(released))


def _value(aggregate: Aggregate, draft: _Draft) -> float | None:
    if aggregate.column is None:
        return float(draft.rows)
    stats = draft.summed[aggregate.column]
    if aggregate.kind is AggregateKind.SUM:
        return stats.total
    return stats.total / stats.values if stats.values else None
