"""What an upload is checked against: a dataset's declaration, the problems found and the
limits on one upload.

Privacy rule: no message made here ever holds a value of a non-public column.  Parser
exceptions are never passed on, as their texts quote data: they become generic problems.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

import polars as pl

from analytics.column_names import column_name_problem, normalise
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from i18n import Msg

_MAX_CATEGORIES = 1000
_MAX_ROWS_PER_ID = 1000
_INT64 = 2**63 - 1
_SHOWN_CHARS = 40  # longest quoted value of a public column that a message may show
_SHOWN_PROBLEMS = 5  # problems spelled out in str(IngestError)
# Anything a parser raises, including pyo3 panics (a BaseException): its text may hold data.
PARSER_ERRORS = (Exception, pl.exceptions.PanicException)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a declaration or an upload; never holds a non-public value."""

    column: str | None  # None for file-level problems
    row: int | None  # 1-based data row (header excluded)
    expected: str

    def __str__(self) -> str:
        return self.message()

    def message(self) -> Msg:
        """The problem as a sentence that can be translated (``expected`` too, if a Msg)."""
        column, row, expected = self.column, self.row, self.expected
        if column is not None and row is not None:
            return Msg(
                "column {column}, row {row}: expected {expected}",
                column=repr(column),
                row=row,
                expected=expected,
            )
        if column is not None:
            return Msg(
                "column {column}: expected {expected}", column=repr(column), expected=expected
            )
        if row is not None:
            return Msg("row {row}: expected {expected}", row=row, expected=expected)
        return Msg("expected {expected}", expected=expected)


class IngestError(ValueError):
    """Raised for any invalid declaration or upload; carries the problems found.

    ``problems`` holds at most ``IngestLimits.max_problems`` of them; ``total``
    counts all that were found, which can be more.
    """

    problems: tuple[Problem, ...]
    total: int

    def __init__(self, problems: Sequence[Problem], total: int | None = None) -> None:
        self.problems = tuple(problems)
        self.total = max(total or 0, len(self.problems))
        lines = [Msg("  - {problem}", problem=p.message()) for p in self.problems[:_SHOWN_PROBLEMS]]
        if self.total > _SHOWN_PROBLEMS:
            lines.append(Msg("  ... and {count} more", count=self.total - _SHOWN_PROBLEMS))
        heading = Msg("1 problem:") if self.total == 1 else Msg("{n} problems:", n=self.total)
        super().__init__(_lines(heading, *lines))


def _lines(first: Msg, *rest: Msg) -> Msg:
    """Lines as one message, each translated on its own (a Msg's Msg parameters are)."""
    if not rest:
        return first
    return Msg("{first}\n{rest}", first=first, rest=_lines(*rest))


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on one upload; ``max_bytes`` is the setting ``VEIL_MAX_UPLOAD_BYTES``."""

    max_bytes: int = 256 * 2**20
    max_rows: int = 10_000_000
    max_columns: int = 500
    max_problems: int = 50  # stop collecting after this many


def fail(expected: str) -> IngestError:
    """An error with one file-level problem."""
    return IngestError([Problem(None, None, expected)])


def quote(value: object) -> str:
    """A value of a PUBLIC column as a message may show it: quoted, at most 40 chars."""
    text = repr(str(value))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 2] + "…" + text[-1]


def guarded(step: Callable[[], _T], expected: str) -> _T:
    """Run a parser step; turn its failure into a generic problem that quotes no data."""
    try:
        return step()
    except (IngestError, MemoryError):  # ours, or one that quotes nothing
        raise
    except PARSER_ERRORS:
        failure = fail(expected)
    # Raised outside the handler, so the parser's exception is not even its __context__.
    raise failure


# --- The declaration ---------------------------------------------------------------


def normalised_schema(schema: DatasetSchema) -> DatasetSchema:
    """``schema`` with its column names (and privacy-unit id) in NFC, the form names are
    stored and compared in; names that are not text are left for ``validate_schema``."""

    def nfc(name: str) -> str:
        return normalise(name) if isinstance(name, str) else name

    columns = tuple(dataclasses.replace(c, name=nfc(c.name)) for c in schema.columns)
    unit = dataclasses.replace(
        schema.privacy_unit, id_column=nfc(schema.privacy_unit.id_column or "") or None
    )
    return DatasetSchema(columns, unit)


def validate_schema(schema: DatasetSchema) -> None:
    """Raise ``IngestError`` listing everything wrong with a dataset declaration."""
    if not schema.columns:
        raise fail(Msg("at least one declared column"))
    problems: list[Problem] = []
    seen: set[str] = set()
    for spec in schema.columns:
        if spec.name in seen:
            problems.append(Problem(spec.name, None, Msg("a unique column name")))
        seen.add(spec.name)
        problems += _column_problems(spec)
    problems += _privacy_unit_problems(schema)
    if problems:
        raise IngestError(problems)


def _column_problems(spec: ColumnSpec) -> list[Problem]:
    problem = column_name_problem(spec.name)
    if problem is not None or spec.name != normalise(spec.name):
        shown = quote(spec.name)[1:-1]  # a name, not data, but it may be any length
        return [Problem(shown, None, problem or Msg("a column name in Unicode NFC form"))]
    problems = []
    lower, upper = spec.lower, spec.upper
    if spec.is_numeric:
        if not (_finite(lower) and _finite(upper) and lower < upper):
            problems.append(Problem(spec.name, None, Msg("finite bounds with lower < upper")))
        elif spec.type is ColumnType.INTEGER and not -_INT64 <= lower <= upper <= _INT64:
            # The values are 64-bit integers, and so must the DP library's bounds be.
            problems.append(
                Problem(spec.name, None, Msg("bounds from -{limit} to {limit}", limit=_INT64))
            )
    elif (lower, upper) != (None, None):
        problems.append(Problem(spec.name, None, Msg("no bounds (only numeric columns have them)")))
    if spec.categories is not None and spec.type is not ColumnType.STRING:
        problems.append(
            Problem(spec.name, None, Msg("no categories (only string columns have them)"))
        )
    # Public strings need categories (their public group keys); other strings may have them.
    elif spec.categories is not None or spec.column_class is ColumnClass.PUBLIC:
        need = Msg(
            "declared categories: 1 to {limit} distinct non-empty strings", limit=_MAX_CATEGORIES
        )
        bad = spec.type is ColumnType.STRING and not _good_categories(spec.categories)
        problems += [Problem(spec.name, None, need)] if bad else []
    return problems


def _finite(bound: object) -> TypeGuard[float]:
    if not isinstance(bound, int | float) or isinstance(bound, bool):
        return False
    try:
        return math.isfinite(bound)
    except OverflowError:  # an int past the largest float
        return False


def _good_categories(categories: tuple[str, ...] | None) -> bool:
    if categories is None or not 1 <= len(categories) <= _MAX_CATEGORIES:
        return False
    valid = all(isinstance(c, str) and c for c in categories)
    return valid and len(set(categories)) == len(categories)


def _privacy_unit_problems(schema: DatasetSchema) -> list[Problem]:
    unit = schema.privacy_unit
    per_id = unit.max_rows_per_id
    if unit.id_column is None:
        return (
            [] if per_id == 1 else [Problem(None, None, Msg("max_rows_per_id 1 with no id column"))]
        )
    name = unit.id_column
    if name not in schema.names:
        return [Problem(quote(name)[1:-1], None, Msg("a declared column as privacy-unit id"))]
    problems = []
    spec = schema.column(name)
    if spec.type is ColumnType.FLOAT:
        problems.append(Problem(name, None, Msg("an id column that is not float")))
    if spec.nullable:  # a row with no id belongs to no protected individual
        problems.append(Problem(name, None, Msg("an id column that is not nullable")))
    if type(per_id) is not int or not 1 <= per_id <= _MAX_ROWS_PER_ID:
        problems.append(
            Problem(
                name, None, Msg("max_rows_per_id between 1 and {limit}", limit=_MAX_ROWS_PER_ID)
            )
        )
    return problems
