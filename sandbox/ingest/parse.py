"""Parse an uploaded CSV or Parquet file in memory (never on disk) and check it against its
declaration (``sandbox.ingest.schema``) value by value (``sandbox.ingest.values``), giving a
typed frame or Parquet file ready to be stored.

Privacy rule: no message made here ever holds a value of a non-public column.  Parser
exceptions are never passed on, as their texts quote data: they become generic problems.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import polars as pl

from analytics.column_names import is_column_name, normalise
from analytics.schema import ColumnType, DatasetSchema
from i18n import Msg
from sandbox.ingest.schema import (
    PARSER_ERRORS,
    IngestError,
    IngestLimits,
    Problem,
    fail,
    guarded,
    normalised_schema,
    quote,
    validate_schema,
)
from sandbox.ingest.text import ENCODINGS, charset, record_problems, to_utf8
from sandbox.ingest.values import (
    Problems,
    conversions,
    fast_convert,
    fast_good,
    output_columns,
    readable_type,
    typed_name,
    value_checks,
)

__all__ = [
    "ENCODINGS",
    "EncodedUpload",
    "FileFormat",
    "IngestError",
    "IngestLimits",
    "Problem",
    "charset",
    "detect_format",
    "encode_upload",
    "normalised_schema",
    "read_upload",
    "validate_schema",
]

_PARQUET_MAGIC = b"PAR1"
_BATCH_ROWS: int | None = None  # rows per batch of the exact pass; None: as polars reads them
_DEFAULT_LIMITS = IngestLimits()
_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class FileFormat(enum.StrEnum):
    """The upload formats Veil reads."""

    CSV = "csv"
    PARQUET = "parquet"


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
        raise fail(
            Msg("a CSV or Parquet file (content type {type} is not supported)", type=quote(mime))
        )
    is_parquet = data[:4] == _PARQUET_MAGIC
    if not is_parquet and (says_parquet or (filename or "").lower().endswith((".parquet", ".pq"))):
        raise fail(Msg("a Parquet file (it does not start with PAR1)"))
    return FileFormat.PARQUET if is_parquet else FileFormat.CSV


# --- Reading -----------------------------------------------------------------------
#
# An upload is never parsed into one table of text (a CSV read as text takes several times
# its size in memory).  polars' streaming engine reads it in batches, converts and checks
# each, and writes the result straight to its destination (Parquet, or a frame for tests).
#
# A CSV is first read by the *fast* pass, one streaming query in which the CSV reader parses
# numeric columns as numbers and every value is checked at once, with a yes/no answer.  The
# fast pass only ever accepts.  On anything it cannot vouch for (a value the reader does not
# parse, e.g. "5 " with a trailing space; a boolean spelled " Yes "; a blank line; any
# problem) it gives up, and the *exact* pass reads everything as text, converts it column by
# column and reports every problem with its row.  What the fast pass accepts, the exact pass
# accepts with the same values: the reader parses a number exactly where the exact pass does
# and maps only empty and whitespace fields to null, which the exact pass treats as empty too
# (a line that is blank, which the exact pass skips, cannot be told from a row of whitespace,
# which it does not: hence the fast pass gives up on both).  Parquet needs no typed reader:
# its fast pass runs the exact pass's conversions and checks, and only gives up on a problem.


@dataclass(frozen=True)
class EncodedUpload:
    """An upload that passed every check, as Parquet: the declared columns in declared order,
    typed Int64, Float64, String or Boolean."""

    parquet: bytes
    rows: int


def read_upload(
    data: bytes,
    fmt: FileFormat,
    schema: DatasetSchema,
    limits: IngestLimits = _DEFAULT_LIMITS,
    *,
    encoding: str | None = None,
) -> pl.DataFrame:
    """Parse ``data`` and check it against ``schema``; raise ``IngestError`` if anything is wrong.

    Returns the declared columns, in declared order, typed Int64, Float64,
    String or Boolean.  Row numbers in problems are 1-based data rows.  A CSV's
    ``encoding`` (one of ``ENCODINGS``) is detected when None (``sandbox.ingest.text``).
    """
    return _checked(data, fmt, schema, limits, _FrameOutput, encoding)


def encode_upload(
    data: bytes,
    fmt: FileFormat,
    schema: DatasetSchema,
    limits: IngestLimits = _DEFAULT_LIMITS,
    *,
    encoding: str | None = None,
) -> EncodedUpload:
    """``read_upload``, written as Parquet in memory without ever holding the whole table.

    The checks and their problems are exactly those of ``read_upload``.
    """
    return _checked(data, fmt, schema, limits, _ParquetOutput, encoding)


class _Output(Protocol[_T_co]):
    """Where the checked rows go: planned into the query that reads them, a fresh one per pass."""

    def plan(self, rows: pl.LazyFrame) -> pl.LazyFrame: ...

    def result(self, collected: pl.DataFrame, height: int) -> _T_co: ...


class _FrameOutput:
    def plan(self, rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows

    def result(self, collected: pl.DataFrame, height: int) -> pl.DataFrame:
        return collected


class _ParquetOutput:
    def __init__(self) -> None:
        self._buffer = io.BytesIO()

    def plan(self, rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.sink_parquet(self._buffer, lazy=True)

    def result(self, collected: pl.DataFrame, height: int) -> EncodedUpload:
        return EncodedUpload(self._buffer.getvalue(), height)


def _checked(
    data: bytes,
    fmt: FileFormat,
    schema: DatasetSchema,
    limits: IngestLimits,
    output: Callable[[], _Output[_T]],
    encoding: str | None = None,
) -> _T:
    """Check the upload and write its rows to a fresh ``output()`` (a new one for each pass)."""
    validate_schema(schema)
    if len(data) > limits.max_bytes:
        raise fail(
            Msg(
                "at most {limit} bytes, the setting VEIL_MAX_UPLOAD_BYTES (this file has {size})",
                limit=limits.max_bytes,
                size=len(data),
            )
        )
    if FileFormat(fmt) is FileFormat.PARQUET:
        return _checked_parquet(data, schema, limits, output)
    data = to_utf8(data, encoding)
    names = _csv_header(data, schema, limits)
    # A short record reads as empty values: where they are allowed, check records first.
    checked_records = any(s.nullable for s in schema.columns)
    if checked_records:
        _require_records(data, len(names), limits)
    scan = _scan_csv(data, names, schema, limits, typed=True)
    converts = [fast_convert(pl.col(s.name), s) for s in schema.columns]
    columns = enumerate(schema.columns)
    good = [fast_good(pl.col(s.name), pl.col(typed_name(i)), s) for i, s in columns]
    fast = _fast(scan, schema, limits, output(), converts, good, blank_is_doubt=True)
    if fast is not None:
        return fast
    if not checked_records:
        _require_records(data, len(names), limits)
    scan = _scan_csv(data, names, schema, limits, typed=False)
    return _exact(scan, schema, limits, output(), _BAD_CSV, blank=True)


def _checked_parquet(
    data: bytes, schema: DatasetSchema, limits: IngestLimits, output: Callable[[], _Output[_T]]
) -> _T:
    """Parquet: its own types, no blank lines; the fast pass runs the exact pass's checks."""
    expected = Msg("a readable Parquet file")
    names = guarded(lambda: list(pl.read_parquet_schema(io.BytesIO(data))), expected)
    _check_columns(names, schema, limits)
    scan = pl.scan_parquet(io.BytesIO(data), n_rows=limits.max_rows + 1).select(schema.names)
    sources = guarded(scan.collect_schema, expected)
    if all(readable_type(sources[s.name]) for s in schema.columns):
        converts = conversions(schema, sources)
        good = [~c.bad.fill_null(False) for c in value_checks(schema, sources)]
        fast = _fast(scan, schema, limits, output(), converts, good, blank_is_doubt=False)
        if fast is not None:
            return fast
    return _exact(scan, schema, limits, output(), expected, blank=False)


_BAD_CSV = Msg('a well-formed CSV file: comma-separated, quoted with ", one record per row')


def _csv_header(data: bytes, schema: DatasetSchema, limits: IngestLimits) -> list[str]:
    """The CSV's column names (NFC), once it is known to name the declared columns."""
    # The header is within the first MiB (500 names of 64 characters need far less); the csv
    # module parses just that, while polars would scan the whole file, and would rename
    # duplicate names where we want to report them.  The cut may split a character: ignore it.
    text = data[: 1 << 20].decode("utf-8-sig", errors="ignore")
    expected = Msg("a CSV file with a header row")
    header = guarded(lambda: next(csv.reader(io.StringIO(text)), None), expected)
    if not header:
        raise fail(expected)
    names = [normalise(name.strip()) for name in header]  # tolerate "a, b" headers
    _check_columns(names, schema, limits)
    return names


def _require_records(data: bytes, width: int, limits: IngestLimits) -> None:
    """Raise ``IngestError`` naming the row of each record that is not ``width`` fields."""
    problems, total = record_problems(data, width, limits.max_problems)
    if problems:
        raise IngestError(problems, total)


def _scan_csv(
    data: bytes, names: list[str], schema: DatasetSchema, limits: IngestLimits, *, typed: bool
) -> pl.LazyFrame:
    """The CSV's declared columns: all text, or (``typed``) numeric ones read as numbers."""
    numbers = {ColumnType.INTEGER: pl.Int64, ColumnType.FLOAT: pl.Float64}
    overrides = {s.name: numbers[s.type] for s in schema.columns if typed and s.type in numbers}
    return pl.scan_csv(
        data,  # read in place, not copied
        new_columns=names,
        infer_schema=False,  # text but for the overrides: we convert, and check each value
        schema_overrides=overrides,
        n_rows=limits.max_rows + 1,  # one more than allowed, to tell if there are too many
    ).select(schema.names)


def _check_columns(names: Sequence[str], schema: DatasetSchema, limits: IngestLimits) -> None:
    """The file's columns must be exactly the declared ones, in any order."""
    if len(names) > limits.max_columns:
        raise fail(Msg("at most {limit} columns", limit=limits.max_columns))
    declared = set(schema.names)
    # A file without a header row makes its first data row look like a header: then
    # no declared name matches, and its "names" are data that we must not echo.
    is_header = bool(declared & set(names))
    problems = [
        Problem(n, None, Msg("a column named {name} (declared)", name=repr(n)))
        for n in schema.names
        if n not in names
    ]
    if not is_header:
        problems.insert(0, Problem(None, None, Msg("a header row naming the declared columns")))
    seen: set[str] = set()
    for position, name in enumerate(names if is_header else (), start=1):
        safe = is_column_name(name)
        label = name if safe else None
        if name in seen:
            once = (
                Msg("each column named once")
                if safe
                else Msg("each column named once (header field {position})", position=position)
            )
            problems.append(Problem(label, None, once))
        elif name not in declared:
            undeclared = (
                Msg("no undeclared columns")
                if safe
                else Msg("no undeclared columns (header field {position})", position=position)
            )
            problems.append(Problem(label, None, undeclared))
        seen.add(name)
    if problems:
        raise IngestError(problems[: limits.max_problems], len(problems))


# Blank lines parse as all-empty rows: skipped, as pandas and csv do, keeping row numbers.
_BLANK = pl.all_horizontal(pl.all().is_null())


def _fast(
    scan: pl.LazyFrame,
    schema: DatasetSchema,
    limits: IngestLimits,
    output: _Output[_T],
    converts: Sequence[pl.Expr],
    good: Sequence[pl.Expr],
    *,
    blank_is_doubt: bool,
) -> _T | None:
    """The checked rows if every one is certainly good, else None: one streaming query that
    converts each column (``converts``, in declared order), writes the result to ``output``
    and tells whether every row is ``good`` (true where a row passes all checks)."""
    converted = scan.with_columns(e.alias(typed_name(i)) for i, e in enumerate(converts))
    sure = pl.all_horizontal(good)
    if blank_is_doubt:
        sure = sure & ~pl.all_horizontal(pl.col(schema.names).is_null())
    verdict = [pl.len().alias("rows"), sure.all().alias("good")]
    unit = schema.privacy_unit
    if unit.id_column is not None:
        ids = pl.col(typed_name(schema.names.index(unit.id_column)))
        most = ids.drop_nulls().unique_counts().max()
        verdict.append((most <= unit.max_rows_per_id).alias("unit"))
    rows = output.plan(converted.select(output_columns(schema)))
    try:
        found, written = pl.collect_all([converted.select(verdict), rows], engine="streaming")
    except MemoryError:
        raise
    except PARSER_ERRORS:  # e.g. a value the reader does not parse: the exact pass will say
        return None
    height = found["rows"].item()
    if not 0 < height <= limits.max_rows or not all(found.row(0)[1:]):
        return None
    return output.result(written, height)


def _exact(
    scan: pl.LazyFrame,
    schema: DatasetSchema,
    limits: IngestLimits,
    output: _Output[_T],
    unreadable: str,
    *,
    blank: bool,
) -> _T:
    """The checked rows, or ``IngestError`` with every problem (first checked batch by batch
    with row numbers, then, if all is well, read again to convert and write)."""
    sources = scan.collect_schema()
    problems = Problems(schema, limits, sources, skip_blank=blank)
    guarded(
        lambda: scan.sink_batches(
            problems.check, chunk_size=_BATCH_ROWS, lazy=False, maintain_order=True
        ),
        unreadable,
    )
    problems.raise_any()
    rows = scan.filter(~_BLANK) if blank else scan
    converted = rows.with_columns(
        e.alias(typed_name(i)) for i, e in enumerate(conversions(schema, sources))
    )
    planned = output.plan(converted.select(output_columns(schema)))
    written = guarded(lambda: planned.collect(engine="streaming"), unreadable)
    return output.result(written, problems.kept)
