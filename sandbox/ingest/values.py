"""How each value of an upload is converted to its declared type and checked, as vectorised
polars expressions, and how problems are collected batch by batch with their row numbers.

Privacy rule: a problem quotes a value only for a PUBLIC column (see ``Check.shown``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from i18n import Msg
from sandbox.ingest.schema import IngestError, IngestLimits, Problem, fail, guarded, quote

_ROW = "#row"  # not a valid declared name, so it cannot collide with a column


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def output_columns(schema: DatasetSchema) -> list[pl.Expr]:
    return [pl.col(typed_name(i)).alias(s.name) for i, s in enumerate(schema.columns)]


def conversions(schema: DatasetSchema, sources: pl.Schema) -> list[pl.Expr]:
    """Each declared column converted from its source type (``typed_name(i)`` once aliased)."""
    return [_convert(pl.col(s.name), sources[s.name], s.type) for s in schema.columns]


def value_checks(schema: DatasetSchema, sources: pl.Schema) -> list[Check]:
    """Every column's checks, in declared order, on the converted columns."""
    return [c for i, s in enumerate(schema.columns) for c in _column_checks(s, i, sources[s.name])]


class Problems:
    """Checks an upload batch by batch (in file order), keeping the first problems in row
    order and counting them all."""

    def __init__(
        self,
        schema: DatasetSchema,
        limits: IngestLimits,
        sources: pl.Schema,
        *,
        skip_blank: bool,
    ) -> None:
        self.schema, self.limits, self.skip_blank = schema, limits, skip_blank
        self.rows = 0  # read, blank ones included
        self.kept = 0
        self.found: list[tuple[int, int, Problem]] = []  # (row, check number, problem)
        self.total = 0
        self.ids: list[pl.DataFrame] = []  # row numbers and ids, for the privacy-unit check
        columns = schema.columns
        self.unsupported = [
            Problem(s.name, None, f"{_TYPE_EXPECTED[s.type]} values, not nested or binary data")
            for s in columns
            if not readable_type(sources[s.name])
        ]
        supported = not self.unsupported
        converts = conversions(schema, sources) if supported else []
        self.converts = [e.alias(typed_name(i)) for i, e in enumerate(converts)]
        self.checks = value_checks(schema, sources) if supported else []
        unit = schema.privacy_unit.id_column
        self.id_column = None if unit is None else typed_name(schema.names.index(unit))

    def check(self, batch: pl.DataFrame) -> None:
        """Check one batch (``sink_batches`` hands them over in file order)."""
        # Numbered here, not by polars' row index, which makes its reader hold a copy of the
        # whole upload (polars 1.36).
        batch = batch.with_row_index(_ROW, offset=self.rows + 1)
        self.rows += batch.height
        if self.rows > self.limits.max_rows:
            raise fail(Msg("at most {limit} data rows", limit=self.limits.max_rows))
        if self.skip_blank:
            batch = batch.filter(~pl.all_horizontal(pl.exclude(_ROW).is_null()))
        self.kept += batch.height
        if self.unsupported or batch.height == 0:
            return  # only counting rows, so that a row limit or an empty file is reported first
        expected = Msg("values that can be checked")
        typed = guarded(lambda: batch.with_columns(self.converts), expected)
        budget = self.limits.max_problems
        self._add(*guarded(lambda: _find(typed, self.checks, budget), expected))
        if self.id_column is not None:
            self.ids.append(typed.select(_ROW, self.id_column))

    def raise_any(self) -> None:
        """Raise ``IngestError`` if anything is wrong, the first problems in row order."""
        if self.kept == 0:
            raise fail(Msg("at least one data row"))
        if self.unsupported:
            raise IngestError(self.unsupported)
        if self.id_column is not None:  # rows per id: across all the batches
            ids = pl.concat(self.ids)
            checks = _privacy_unit_checks(ids, self.schema)
            budget, first = self.limits.max_problems, len(self.checks)
            found = guarded(
                lambda: _find(ids, checks, budget, first_check=first),
                Msg("values that can be checked"),
            )
            self._add(*found)
        if self.total:
            raise IngestError([p for _, _, p in self.found], self.total)

    def _add(self, found: list[tuple[int, int, Problem]], total: int) -> None:
        merged = sorted(self.found + found, key=lambda p: p[:2])
        self.found = merged[: self.limits.max_problems]
        self.total += total


# --- Values ------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A vectorised check: ``bad`` is true on each offending row."""

    column: str
    expected: str
    bad: pl.Expr
    shown: pl.Expr | None = None  # the offending value: set for PUBLIC columns only

    def problem(self, row: int, value: object) -> Problem:
        if self.shown is None or value is None:
            return Problem(self.column, row, self.expected)
        return Problem(
            self.column,
            row,
            Msg("{expected}, not {value}", expected=self.expected, value=quote(value)),
        )


_TYPE_EXPECTED = {
    ColumnType.INTEGER: Msg("an integer"),
    ColumnType.FLOAT: Msg("a finite number"),
    ColumnType.BOOLEAN: Msg("true/false, 1/0 or yes/no"),
    ColumnType.STRING: "text",  # never fails: any text is a string
}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# What the fast pass reads as booleans, as they are: each is one of _BOOLEANS once lowercased.
_USUAL_BOOLEANS = {
    **_BOOLEANS,
    **{w.upper(): v for w, v in _BOOLEANS.items()},
    **{w.title(): v for w, v in _BOOLEANS.items()},
}
_TEXT_SOURCES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean, pl.Null)


def typed_name(index: int) -> str:
    return f"#typed{index}"


def readable_type(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype.is_temporal() or isinstance(dtype, _TEXT_SOURCES)


def _text(raw: pl.Expr, source: pl.DataType) -> pl.Expr:
    return raw if isinstance(source, pl.String) else raw.cast(pl.String, strict=False)


def _convert(raw: pl.Expr, source: pl.DataType, target: ColumnType) -> pl.Expr:
    """The declared-type value, or null where the value is empty or does not convert."""
    if target is ColumnType.STRING:
        text = _text(raw, source)
        return pl.when(text != "").then(text)  # "" is empty, as an empty CSV field is
    if target is ColumnType.INTEGER and source.is_integer():
        return raw.cast(pl.Int64, strict=False)  # a UInt64 too large becomes null: bad
    if target is ColumnType.INTEGER and (source.is_float() or source.is_decimal()):
        number = raw.cast(pl.Float64)
        whole = number.is_finite() & (number.floor() == number)
        return pl.when(whole).then(number.cast(pl.Int64, strict=False))
    if target is ColumnType.FLOAT and source.is_numeric():
        number = raw.cast(pl.Float64, strict=False)
    elif target is ColumnType.BOOLEAN and isinstance(source, pl.Boolean):
        return raw
    else:  # parse text: strings, and anything else via its text form
        text = _text(raw, source).str.strip_chars()
        if target is ColumnType.BOOLEAN:
            return _boolean(text.str.to_lowercase(), _BOOLEANS)
        if target is ColumnType.INTEGER:
            return text.cast(pl.Int64, strict=False)
        number = text.cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)  # NaN and ±inf are bad values


def _boolean(text: pl.Expr, words: dict[str, bool]) -> pl.Expr:
    """``words[text]``, null for any other text (``replace_strict`` would stop polars from
    streaming the query)."""
    true = [w for w, v in words.items() if v]
    false = [w for w, v in words.items() if not v]
    return pl.when(text.is_in(true)).then(True).when(text.is_in(false)).then(False)


def fast_convert(raw: pl.Expr, spec: ColumnSpec) -> pl.Expr:
    """The fast pass's conversion of a column as the typed CSV reader gave it."""
    if spec.type is ColumnType.FLOAT:
        return pl.when(raw.is_finite()).then(raw)
    if spec.type is ColumnType.INTEGER:
        return raw
    if spec.type is ColumnType.STRING:
        return pl.when(raw != "").then(raw)
    return _boolean(raw, _USUAL_BOOLEANS)  # others, e.g. " no ", are left to the exact pass


def fast_good(raw: pl.Expr, value: pl.Expr, spec: ColumnSpec) -> pl.Expr:
    """True where the fast pass is sure that a value passes ``_column_checks``.

    Empty is what the exact pass calls empty: a null from the typed reader (an empty or
    whitespace field), or an empty string.  A value the fast conversion did not give is bad.
    """
    empty = value.is_null() if spec.type is ColumnType.STRING else raw.is_null()
    good = value.is_not_null()
    if spec.is_numeric and spec.lower is not None and spec.upper is not None:
        good = good & ~((value < spec.lower) | (value > spec.upper))
    if spec.categories is not None:
        good = good & value.is_in(list(spec.categories))
    return pl.when(empty).then(pl.lit(spec.nullable)).otherwise(good).fill_null(False)


def _column_checks(spec: ColumnSpec, index: int, source: pl.DataType) -> list[Check]:
    raw, value = pl.col(spec.name), pl.col(typed_name(index))
    text = _text(raw, source)
    blank = text if spec.type is ColumnType.STRING else text.str.strip_chars()
    empty = raw.is_null() if source.is_numeric() else raw.is_null() | (blank == "")
    shown = text if spec.column_class is ColumnClass.PUBLIC else None
    checks = [] if spec.nullable else [Check(spec.name, Msg("no empty values"), empty)]
    if spec.type is not ColumnType.STRING:  # any text is a string
        checks.append(Check(spec.name, _TYPE_EXPECTED[spec.type], ~empty & value.is_null(), shown))
    if spec.is_numeric and spec.lower is not None and spec.upper is not None:
        outside = (value < spec.lower) | (value > spec.upper)
        between = Msg(
            "a number between {lower} and {upper}",
            lower=_number(spec.lower),
            upper=_number(spec.upper),
        )
        checks.append(Check(spec.name, between, outside, shown))
    if spec.categories is not None:
        other = value.is_not_null() & ~value.is_in(list(spec.categories))
        checks.append(Check(spec.name, Msg("one of the declared categories"), other, shown))
    return checks


def _privacy_unit_checks(typed: pl.DataFrame, schema: DatasetSchema) -> list[Check]:
    unit = schema.privacy_unit
    if unit.id_column is None:
        return []
    ids = pl.col(typed_name(schema.names.index(unit.id_column)))
    # Counting rows per id is cheap; finding the row that passes the limit is not, so it is
    # only done when some id does pass it.
    most = typed.select(ids.drop_nulls().unique_counts().max()).item()
    if most is None or most <= unit.max_rows_per_id:
        return []
    # 0-based position of each row among its id's rows: equal to the limit on the first row past it.
    over_limit = ids.is_not_null() & (pl.int_range(pl.len()).over(ids) == unit.max_rows_per_id)
    return [
        Check(unit.id_column, Msg("at most {n} rows per id", n=unit.max_rows_per_id), over_limit)
    ]


def _find(
    frame: pl.DataFrame, checks: Sequence[Check], budget: int, first_check: int = 0
) -> tuple[list[tuple[int, int, Problem]], int]:
    """The first ``budget`` problems in row order, as (row, check number, problem), and how
    many there are in all (one pass).  Checks are numbered from ``first_check``."""
    if not checks:  # e.g. only nullable strings: nothing to check
        return [], 0
    exprs = []
    for j, check in enumerate(checks):
        bad = check.bad.fill_null(False)
        exprs += [
            bad.sum().alias(f"n{j}"),
            pl.col(_ROW).filter(bad).head(budget).implode().alias(f"r{j}"),
        ]
        if check.shown is not None:
            exprs.append(check.shown.filter(bad).head(budget).implode().alias(f"s{j}"))
    found = frame.lazy().select(exprs).collect().row(0, named=True)
    problems: list[tuple[int, int, Problem]] = []
    for j, check in enumerate(checks):
        rows: list[int] = found[f"r{j}"]
        values: list[object] = found.get(f"s{j}") or [None] * len(rows)
        number = first_check + j
        problems += [(r, number, check.problem(r, v)) for r, v in zip(rows, values, strict=True)]
    problems.sort(key=lambda p: p[:2])
    return problems[:budget], sum(found[f"n{j}"] for j in range(len(checks)))
