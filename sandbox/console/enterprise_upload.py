"""Console uploads: a multipart body read in memory (never spooled to disk), and the
detection of each column's type from a sample for the classification form."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Final

import polars as pl
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from analytics.column_names import normalise
from analytics.schema import ColumnClass, ColumnType
from i18n import Msg
from i18n.catalog import translate
from policies.errors import InvalidRequest
from sandbox.console.enterprise_forms import Fields
from sandbox.ingest import parse as ingest
from sandbox.ingest import suggest as ingest_suggest
from sandbox.ingest.text import to_text

#: How much of a chosen file the page's script sends for detection (CSV; Parquet is sent whole).
SAMPLE_BYTES: Final = 1 << 20
_SAMPLE_ROWS: Final = 10_000
_MAX_FIELDS: Final = 5_000
_BOOLEANS: Final = frozenset({"true", "false", "yes", "no"})
MINUTE_FORMAT: Final = "%Y-%m-%dT%H:%M"

# ---------------------------------------------------------------- multipart, in memory


@dataclass(frozen=True)
class FilePart:
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class _Parts:
    """The parts of a multipart body, collected in memory from the parser's callbacks."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self._name = self._value = b""

    def begin(self) -> None:
        self.parts.append(_Part())

    def name(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self.parts[-1].headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].body.extend(data[start:end])


@dataclass(frozen=True)
class Upload:
    fields: Fields
    files: dict[str, FilePart]

    def file(self, name: str) -> FilePart:
        found = self.files.get(name)
        if found is None or not found.data:
            raise InvalidRequest(Msg("choose a CSV or Parquet file to upload"))
        return found


async def read_multipart(request: Request, limit: int) -> Upload:
    """Parse a ``multipart/form-data`` body in memory, refusing more than ``limit`` bytes."""
    kind, params = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest(Msg("send the form as multipart/form-data: reload the page and retry"))
    too_large = InvalidRequest(
        Msg("the upload is larger than VEIL_MAX_UPLOAD_BYTES ({limit} bytes)", limit=limit)
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    found = _Parts()
    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": found.begin,
            "on_header_field": found.name,
            "on_header_value": found.value,
            "on_header_end": found.header_end,
            "on_part_data": found.data,
        },
    )
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            parser.write(chunk)
            if len(found.parts) > _MAX_FIELDS:
                raise InvalidRequest(Msg("a form of at most {most} fields", most=_MAX_FIELDS))
        parser.finalize()
    except MultipartParseError:
        raise InvalidRequest(Msg("the form arrived damaged: reload the page and retry")) from None
    return _upload(found.parts)


def _upload(parts: list[_Part]) -> Upload:
    items: list[tuple[str, str]] = []
    files: dict[str, FilePart] = {}
    for part in parts:
        _, options = parse_options_header(part.headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            content_type = part.headers.get(b"content-type", b"").decode("latin-1") or None
            filename = options[b"filename"].decode("utf-8", "replace")
            files[name] = FilePart(filename, content_type, bytes(part.body))
        else:
            items.append((name, part.body.decode("utf-8", "replace")))
        part.body.clear()
    return Upload(Fields(items), files)


# ---------------------------------------------------------------- detecting columns


@dataclass(frozen=True)
class DetectedColumn:
    """What the sample suggests for one column; the owner confirms or changes each part.

    It holds no value of the data: no bounds, no categories (``sandbox.ingest.suggest``).
    """

    name: str
    type: ColumnType
    suggested_class: ColumnClass
    reason: str
    nullable: bool = False


def invalid_upload(error: ingest.IngestError) -> InvalidRequest:
    """An ingest error as the console shows it: a sentence, then each problem with its rows."""
    rows: dict[tuple[str | None, str], list[int]] = {}
    for p in error.problems:
        rows.setdefault((p.column, p.expected), []).extend([p.row] if p.row else [])
    invalid = InvalidRequest(
        Msg("the file cannot be used as it is ({total} to fix)", total=error.total)
    )
    invalid.problems = [  # type: ignore[attr-defined]
        {"column": column, **_rows(found), "expected": expected}
        for (column, expected), found in rows.items()
    ]
    return invalid


def _rows(found: list[int]) -> dict[str, str]:
    if len(found) <= 1:
        return {"row": str(found[0])} if found else {}
    more = translate(Msg(" and {n} more", n=len(found) - 5)) if len(found) > 5 else ""
    return {"rows": ", ".join(map(str, found[:5])) + more}


def detect_columns(
    sample: FilePart, partial: bool, encoding: str | None = None
) -> list[DetectedColumn]:
    """Each column of the sample with its type and a suggested class (from its name)."""
    try:
        fmt = ingest.detect_format(sample.data, sample.content_type, sample.filename)
        frame = (
            _parquet(sample.data)
            if fmt is ingest.FileFormat.PARQUET
            else _csv(sample, partial, encoding)
        )
    except ingest.IngestError as exc:
        raise invalid_upload(exc) from None
    if frame.width == 0 or frame.height == 0:
        raise InvalidRequest(Msg("the file has no columns or no data rows to detect"))
    if frame.width > 500:
        raise InvalidRequest(Msg("the file has more than 500 columns, the most Veil accepts"))
    return [_detect(frame[name]) for name in frame.columns]


def _csv(sample: FilePart, partial: bool, encoding: str | None) -> pl.DataFrame:
    text = to_text(sample.data, encoding, partial=partial)
    try:
        frame = pl.read_csv(io.StringIO(text), infer_schema=False, n_rows=_SAMPLE_ROWS)
    except Exception:  # parser texts quote data: say only what is wrong
        raise InvalidRequest(
            Msg("the file is not a well-formed CSV file with a header row")
        ) from None
    return frame.rename({old: normalise(old.strip()) for old in frame.columns})


def _parquet(data: bytes) -> pl.DataFrame:
    try:
        return pl.read_parquet(io.BytesIO(data), n_rows=_SAMPLE_ROWS)
    except Exception:  # parser texts quote data
        raise InvalidRequest(Msg("the file is not a readable Parquet file")) from None


def _detect(series: pl.Series) -> DetectedColumn:
    """The column's type from its values; its class from its name and type only."""
    name, dtype = series.name, series.dtype
    few = False
    if dtype.is_integer() or dtype.is_float() or dtype.is_decimal():
        kind = ColumnType.INTEGER if dtype.is_integer() else ColumnType.FLOAT
        nullable = series.cast(pl.Float64).is_finite().fill_null(False).sum() < series.len()
    elif dtype == pl.Boolean:
        kind, nullable = ColumnType.BOOLEAN, series.null_count() > 0
    else:
        kind, nullable, few = _text_type(series.cast(pl.String, strict=False))
    suggestion = ingest_suggest.suggest(name, kind, few_values=few)
    return DetectedColumn(name, kind, suggestion.column_class, suggestion.reason, nullable)


def _text_type(text: pl.Series) -> tuple[ColumnType, bool, bool]:
    """A text column's type, whether it has empty values, and whether it has few values."""
    present = text.filter(text.is_not_null() & (text.str.strip_chars() != ""))
    nullable = present.len() < text.len()
    stripped = present.str.strip_chars()
    if present.len() == 0:
        return ColumnType.STRING, True, False
    for kind, cast in ((ColumnType.INTEGER, pl.Int64), (ColumnType.FLOAT, pl.Float64)):
        numbers = stripped.cast(cast, strict=False)
        if numbers.null_count() == 0 and numbers.cast(pl.Float64).is_finite().all():
            return kind, nullable, False
    if stripped.str.to_lowercase().is_in(list(_BOOLEANS)).all():
        return ColumnType.BOOLEAN, nullable, False
    distinct = present.n_unique()
    few = distinct <= ingest_suggest.CATEGORY_LIMIT and distinct * 2 <= present.len()
    return ColumnType.STRING, nullable, few
