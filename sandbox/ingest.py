"""Parse an uploaded CSV or Parquet file in memory (never on disk) and check it against its
declaration with vectorised polars expressions, giving a typed frame ready to be stored.

Privacy rule: no message made here ever holds a value of a non-public column.  Parser
exceptions are never passed on, as their texts quote data: they become generic problems.
"""

from __future__ import annotations

import codecs
import csv
import enum
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

import polars as pl

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_CATEGORIES = 1000
_MAX_ROWS_PER_ID = 1000
_SHOWN_CHARS = 40  # longest quoted value of a public column that a message may show
_SHOWN_PROBLEMS = 5  # problems spelled out in str(IngestError)
_ROW = "#row"  # not a valid declared name, so it cannot collide with a column
_PARQUET_MAGIC = b"PAR1"
# Anything a parser raises, including pyo3 panics (a BaseException): its text may hold data.
_PARSER_ERRORS = (Exception, pl.exceptions.PanicException)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a declaration or an upload; never holds a non-public value."""

    column: str | None  # None for file-level problems
    row: int | None  # 1-based data row (header excluded)
    expected: str

    def __str__(self) -> str:
        where = [f"column {self.column!r}"] if self.column is not None else []
        where += [f"row {self.row}"] if self.row is not None else []
        prefix = f"{', '.join(where)}: " if where else ""
        return f"{prefix}expected {self.expected}"


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
        lines = [f"  - {p}" for p in self.problems[:_SHOWN_PROBLEMS]]
        if self.total > _SHOWN_PROBLEMS:
            lines.append(f"  ... and {self.total - _SHOWN_PROBLEMS} more")
        noun = "problem" if self.total == 1 else "problems"
        super().__init__("\n".join([f"{self.total} {noun}:", *lines]))


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on one upload; ``max_bytes`` is the setting ``VEIL_MAX_UPLOAD_BYTES``."""

    max_bytes: int = 256 * 2**20
    max_rows: int = 10_000_000
    max_columns: int = 500
    max_problems: int = 50  # stop collecting after this many


_DEFAULT_LIMITS = IngestLimits()


class FileFormat(enum.StrEnum):
    """The upload formats Veil reads."""

    CSV = "csv"
    PARQUET = "parquet"


def _fail(expected: str) -> IngestError:
    """An error with one file-level problem."""
    return IngestError([Problem(None, None, expected)])


def _quote(value: object) -> str:
    """A value of a PUBLIC column as a message may show it: quoted, at most 40 chars."""
    text = repr(str(value))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 2] + "…" + text[-1]


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


# --- The declaration ---------------------------------------------------------------


def validate_schema(schema: DatasetSchema) -> None:
    """Raise ``IngestError`` listing everything wrong with a dataset declaration."""
    if not schema.columns:
        raise _fail("at least one declared column")
    problems: list[Problem] = []
    seen: set[str] = set()
    for spec in schema.columns:
        if spec.name in seen:
            problems.append(Problem(spec.name, None, "a unique column name"))
        seen.add(spec.name)
        problems += _column_problems(spec)
    problems += _privacy_unit_problems(schema)
    if problems:
        raise IngestError(problems)


def _column_problems(spec: ColumnSpec) -> list[Problem]:
    if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
        shown = _quote(spec.name)[1:-1]  # a name, not data, but it may be any length
        rule = "1 to 64 letters, digits or underscores, not starting with a digit"
        return [Problem(shown, None, f"a column name of {rule}")]
    problems = []
    lower, upper = spec.lower, spec.upper
    if spec.is_numeric:
        if not (_finite(lower) and _finite(upper) and lower < upper):
            problems.append(Problem(spec.name, None, "finite bounds with lower < upper"))
    elif (lower, upper) != (None, None):
        problems.append(Problem(spec.name, None, "no bounds (only numeric columns have them)"))
    if spec.categories is not None and spec.type is not ColumnType.STRING:
        problems.append(Problem(spec.name, None, "no categories (only string columns have them)"))
    # Public strings need categories (their public group keys); other strings may have them.
    elif spec.categories is not None or spec.column_class is ColumnClass.PUBLIC:
        need = f"declared categories: 1 to {_MAX_CATEGORIES} distinct non-empty strings"
        bad = spec.type is ColumnType.STRING and not _good_categories(spec.categories)
        problems += [Problem(spec.name, None, need)] if bad else []
    return problems


def _finite(bound: object) -> TypeGuard[float]:
    return isinstance(bound, int | float) and not isinstance(bound, bool) and math.isfinite(bound)


def _good_categories(categories: tuple[str, ...] | None) -> bool:
    if categories is None or not 1 <= len(categories) <= _MAX_CATEGORIES:
        return False
    valid = all(isinstance(c, str) and c for c in categories)
    return valid and len(set(categories)) == len(categories)


def _privacy_unit_problems(schema: DatasetSchema) -> list[Problem]:
    unit = schema.privacy_unit
    per_id = unit.max_rows_per_id
    if unit.id_column is None:
        return [] if per_id == 1 else [Problem(None, None, "max_rows_per_id 1 with no id column")]
    name = unit.id_column
    if name not in schema.names:
        return [Problem(_quote(name)[1:-1], None, "a declared column as privacy-unit id")]
    problems = []
    spec = schema.column(name)
    if spec.type is ColumnType.FLOAT:
        problems.append(Problem(name, None, "an id column that is not float"))
    if spec.nullable:  # a row with no id belongs to no protected individual
        problems.append(Problem(name, None, "an id column that is not nullable"))
    if type(per_id) is not int or not 1 <= per_id <= _MAX_ROWS_PER_ID:
        problems.append(Problem(name, None, f"max_rows_per_id between 1 and {_MAX_ROWS_PER_ID}"))
    return problems


# --- The format --------------------------------------------------------------------

# vnd.ms-excel: what browsers on Windows send for a .csv file.
_CSV_TYPES = {"text/csv", "application/csv", "text/x-csv", "text/plain", "application/vnd.ms-excel"}
_PARQUET_TYPES = {"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"}
_SAYS_NOTHING = {"", "application/octet-stream", "binary/octet-stream"}


def detect_format(data: bytes, content_type: str | None, filename: str | None) -> FileFormat:
    """Parquet when ``data`` starts with ``PAR1``, else CSV.

    Raises ``IngestError`` when the content type names an unsupported format, or
    when the content type or file name says Parquet but the data is not.
    """
    mime = (content_type or "").split(";")[0].strip().lower()
    says_parquet = mime in _PARQUET_TYPES
    if not (says_parquet or mime in _CSV_TYPES or mime in _SAYS_NOTHING):
        raise _fail(f"a CSV or Parquet file (content type {_quote(mime)} is not supported)")
    is_parquet = data[:4] == _PARQUET_MAGIC
    if not is_parquet and (says_parquet or (filename or "").lower().endswith((".parquet", ".pq"))):
        raise _fail("a Parquet file (it does not start with PAR1)")
    return FileFormat.PARQUET if is_parquet else FileFormat.CSV


# --- Reading -----------------------------------------------------------------------


def read_upload(
    data: bytes,
    fmt: FileFormat,
    schema: DatasetSchema,
    limits: IngestLimits = _DEFAULT_LIMITS,
) -> pl.DataFrame:
    """Parse ``data`` and check it against ``schema``; raise ``IngestError`` if anything is wrong.

    Returns the declared columns, in declared order, typed Int64, Float64,
    String or Boolean.  Row numbers in problems are 1-based data rows.
    """
    validate_schema(schema)
    if len(data) > limits.max_bytes:
        limit = f"{limits.max_bytes} bytes, the setting VEIL_MAX_UPLOAD_BYTES"
        raise _fail(f"at most {limit} (this file has {len(data)})")
    read = _read_csv if FileFormat(fmt) is FileFormat.CSV else _read_parquet
    frame = read(data, schema, limits)
    if frame.height == 0:
        raise _fail("at least one data row")
    return _guarded(lambda: _check_values(frame, schema, limits), "values that can be checked")


def _guarded(step: Callable[[], _T], expected: str) -> _T:
    """Run a parser step; turn its failure into a generic problem that quotes no data."""
    try:
        return step()
    except (IngestError, MemoryError):  # ours, or one that quotes nothing
        raise
    except _PARSER_ERRORS:
        failure = _fail(expected)
    # Raised outside the handler, so the parser's exception is not even its __context__.
    raise failure


def _read_csv(data: bytes, schema: DatasetSchema, limits: IngestLimits) -> pl.DataFrame:
    _require_utf8(data)
    # The header is within the first MiB (500 names of 64 characters need far less); the csv
    # module parses just that, while polars would scan the whole file, and would rename
    # duplicate names where we want to report them.  The cut may split a character: ignore it.
    text = data[: 1 << 20].decode("utf-8-sig", errors="ignore")
    expected = "a CSV file with a header row"
    header = _guarded(lambda: next(csv.reader(io.StringIO(text)), None), expected)
    if not header:
        raise _fail(expected)
    names = [name.strip() for name in header]  # tolerate "a, b" headers
    _check_columns(names, schema, limits)
    frame = _guarded(
        lambda: pl.read_csv(
            data,
            new_columns=names,
            infer_schema=False,  # all strings: we convert, so we know each bad value's row
            n_rows=limits.max_rows + 1,
        ),
        'a well-formed CSV file: comma-separated, quoted with ", one record per row',
    )
    frame = _check_row_count(frame, limits)
    # Blank lines parse as all-empty rows; skip them, as pandas and csv do, keeping row numbers.
    return frame.filter(~pl.all_horizontal(pl.exclude(_ROW).is_null())).select(_ROW, *schema.names)


def _require_utf8(data: bytes) -> None:
    """Check UTF-8 in chunks, so a large upload is not copied into one big str."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    chunk = 1 << 20
    try:
        for start in range(0, len(view) + 1, chunk):
            decoder.decode(view[start : start + chunk], final=start + chunk > len(view))
    except UnicodeDecodeError:
        failure = _fail("UTF-8 text (save the CSV as UTF-8)")
    else:
        return
    raise failure  # outside the handler: the decoder's message names the offending byte


def _read_parquet(data: bytes, schema: DatasetSchema, limits: IngestLimits) -> pl.DataFrame:
    expected = "a readable Parquet file"
    names = _guarded(lambda: list(pl.read_parquet_schema(io.BytesIO(data))), expected)
    _check_columns(names, schema, limits)
    frame = _guarded(
        lambda: pl.read_parquet(
            io.BytesIO(data), columns=list(schema.names), n_rows=limits.max_rows + 1
        ),
        expected,
    )
    return _check_row_count(frame, limits).select(_ROW, *schema.names)


def _check_row_count(frame: pl.DataFrame, limits: IngestLimits) -> pl.DataFrame:
    """Readers read one row more than allowed, to tell if there are too many."""
    if frame.height > limits.max_rows:
        raise _fail(f"at most {limits.max_rows} data rows")
    return frame.with_row_index(_ROW, offset=1)


def _check_columns(names: Sequence[str], schema: DatasetSchema, limits: IngestLimits) -> None:
    """The file's columns must be exactly the declared ones, in any order."""
    if len(names) > limits.max_columns:
        raise _fail(f"at most {limits.max_columns} columns")
    declared = set(schema.names)
    # A file without a header row makes its first data row look like a header: then
    # no declared name matches, and its "names" are data that we must not echo.
    is_header = bool(declared & set(names))
    problems = [
        Problem(n, None, f"a column named {n!r} (declared)") for n in schema.names if n not in names
    ]
    if not is_header:
        problems.insert(0, Problem(None, None, "a header row naming the declared columns"))
    seen: set[str] = set()
    for position, name in enumerate(names if is_header else (), start=1):
        safe = _NAME.fullmatch(name) is not None
        label, where = (name, "") if safe else (None, f" (header field {position})")
        if name in seen:
            problems.append(Problem(label, None, f"each column named once{where}"))
        elif name not in declared:
            problems.append(Problem(label, None, f"no undeclared columns{where}"))
        seen.add(name)
    if problems:
        raise IngestError(problems[: limits.max_problems], len(problems))


# --- Values ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    """A vectorised check: ``bad`` is true on each offending row."""

    column: str
    expected: str
    bad: pl.Expr
    shown: pl.Expr | None = None  # the offending value: set for PUBLIC columns only

    def problem(self, row: int, value: object) -> Problem:
        if self.shown is None or value is None:
            return Problem(self.column, row, self.expected)
        return Problem(self.column, row, f"{self.expected}, not {_quote(value)}")


_TYPE_EXPECTED = {
    ColumnType.INTEGER: "an integer",
    ColumnType.FLOAT: "a finite number",
    ColumnType.BOOLEAN: "true/false, 1/0 or yes/no",
    ColumnType.STRING: "text",  # never fails: any text is a string
}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_TEXT_SOURCES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean, pl.Null)


def _typed(index: int) -> str:
    return f"#typed{index}"


def _check_values(frame: pl.DataFrame, schema: DatasetSchema, limits: IngestLimits) -> pl.DataFrame:
    sources = frame.schema
    unsupported = [
        Problem(s.name, None, f"{_TYPE_EXPECTED[s.type]} values, not nested or binary data")
        for s in schema.columns
        if not _supported(sources[s.name])
    ]
    if unsupported:
        raise IngestError(unsupported)
    typed = frame.with_columns(
        _convert(pl.col(s.name), sources[s.name], s.type).alias(_typed(i))
        for i, s in enumerate(schema.columns)
    )
    checks = [
        c for i, s in enumerate(schema.columns) for c in _column_checks(s, i, sources[s.name])
    ]
    checks += _privacy_unit_checks(typed, schema)
    problems, total = _find(typed, checks, limits.max_problems)
    if problems:
        raise IngestError(problems, total)
    return typed.select(pl.col(_typed(i)).alias(s.name) for i, s in enumerate(schema.columns))


def _supported(dtype: pl.DataType) -> bool:
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
            lowered = text.str.to_lowercase()
            return lowered.replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
        if target is ColumnType.INTEGER:
            return text.cast(pl.Int64, strict=False)
        number = text.cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)  # NaN and ±inf are bad values


def _column_checks(spec: ColumnSpec, index: int, source: pl.DataType) -> list[_Check]:
    raw, value = pl.col(spec.name), pl.col(_typed(index))
    text = _text(raw, source)
    blank = text if spec.type is ColumnType.STRING else text.str.strip_chars()
    empty = raw.is_null() if source.is_numeric() else raw.is_null() | (blank == "")
    shown = text if spec.column_class is ColumnClass.PUBLIC else None
    checks = [] if spec.nullable else [_Check(spec.name, "no empty values", empty)]
    if spec.type is not ColumnType.STRING:  # any text is a string
        checks.append(_Check(spec.name, _TYPE_EXPECTED[spec.type], ~empty & value.is_null(), shown))
    if spec.is_numeric and spec.lower is not None and spec.upper is not None:
        outside = (value < spec.lower) | (value > spec.upper)
        between = f"a number between {_number(spec.lower)} and {_number(spec.upper)}"
        checks.append(_Check(spec.name, between, outside, shown))
    if spec.categories is not None:
        other = value.is_not_null() & ~value.is_in(list(spec.categories))
        checks.append(_Check(spec.name, "one of the declared categories", other, shown))
    return checks


def _privacy_unit_checks(typed: pl.DataFrame, schema: DatasetSchema) -> list[_Check]:
    unit = schema.privacy_unit
    if unit.id_column is None:
        return []
    ids = pl.col(_typed(schema.names.index(unit.id_column)))
    # Counting rows per id is cheap; finding the row that passes the limit is not, so it is
    # only done when some id does pass it.
    most = typed.select(ids.drop_nulls().unique_counts().max()).item()
    if most is None or most <= unit.max_rows_per_id:
        return []
    # 0-based position of each row among its id's rows: equal to the limit on the first row past it.
    over_limit = ids.is_not_null() & (pl.int_range(pl.len()).over(ids) == unit.max_rows_per_id)
    return [_Check(unit.id_column, f"at most {unit.max_rows_per_id} rows per id", over_limit)]


def _find(frame: pl.DataFrame, checks: Sequence[_Check], budget: int) -> tuple[list[Problem], int]:
    """The first ``budget`` problems in row order, and how many there are in all (one pass)."""
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
        problems += [(r, j, check.problem(r, v)) for r, v in zip(rows, values, strict=True)]
    problems.sort(key=lambda p: (p[0], p[1]))
    return [p for _, _, p in problems[:budget]], sum(found[f"n{j}"] for j in range(len(checks)))
