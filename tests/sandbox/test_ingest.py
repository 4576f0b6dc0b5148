"""Uploads are parsed in memory, checked against their declaration, and never leak values."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit
from sandbox.ingest import parse as ingest
from sandbox.ingest import values as ingest_values
from sandbox.ingest.parse import (
    FileFormat,
    IngestError,
    IngestLimits,
    Problem,
    detect_format,
    encode_upload,
    read_upload,
    validate_schema,
)

C, P = FileFormat.CSV, FileFormat.PARQUET

SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("patient_id", ColumnType.INTEGER, ColumnClass.INTERNAL, lower=0, upper=10**6),
        ColumnSpec("age", ColumnType.INTEGER, ColumnClass.CONFIDENTIAL, lower=0, upper=150),
        ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, lower=30, upper=45),
        ColumnSpec("ward", ColumnType.STRING, ColumnClass.PUBLIC, categories=("day", "night")),
        ColumnSpec("smoker", ColumnType.BOOLEAN, ColumnClass.INTERNAL),
        ColumnSpec("note", ColumnType.STRING, ColumnClass.SECRET, nullable=True),
    ),
    privacy_unit=PrivacyUnit(id_column="patient_id", max_rows_per_id=2),
)
HEADER = "patient_id,age,temperature_c,ward,smoker,note"
GOOD_ROWS = ["1,34,36.6,day,true,first", "1,34,37.1,night,no,", "2,71,38.0,day,0,hi"]
EXPECTED = pl.DataFrame(
    {
        "patient_id": [1, 1, 2],
        "age": [34, 34, 71],
        "temperature_c": [36.6, 37.1, 38.0],
        "ward": ["day", "night", "day"],
        "smoker": [True, False, False],
        "note": ["first", None, "hi"],
    },
    schema={
        "patient_id": pl.Int64,
        "age": pl.Int64,
        "temperature_c": pl.Float64,
        "ward": pl.String,
        "smoker": pl.Boolean,
        "note": pl.String,
    },
)


def csv(*rows: str, header: str = HEADER) -> bytes:
    return "\n".join([header, *rows, ""]).encode()


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def problems(
    data: bytes,
    fmt: FileFormat = C,
    schema: DatasetSchema = SCHEMA,
    limits: IngestLimits = IngestLimits(),  # noqa: B008 - frozen, so safe to share
) -> tuple[Problem, ...]:
    with pytest.raises(IngestError) as caught:
        read_upload(data, fmt, schema, limits)
    return caught.value.problems


def row_problem(bad_row: str, index: int = 2) -> tuple[Problem, ...]:
    """Problems of a file of the good rows with row ``index`` (1-based) replaced."""
    rows = list(GOOD_ROWS)
    rows[index - 1] = bad_row
    return problems(csv(*rows))


# --- Good uploads ------------------------------------------------------------------


def test_good_csv_in_any_column_order_comes_back_typed_in_declared_order() -> None:
    shuffled = "note,smoker,ward,temperature_c,age,patient_id"
    rows = [",".join(reversed(r.split(","))) for r in GOOD_ROWS]
    rows[0] = rows[0].replace("TRUE", "true").replace(",34,", ", 34 ,")  # spaces around a number
    out = read_upload(csv(*rows, header=shuffled), C, SCHEMA)
    assert_frame_equal(out, EXPECTED)
    assert out.columns == list(SCHEMA.names)


def test_good_parquet_with_native_types_comes_back_typed_in_declared_order() -> None:
    native = EXPECTED.select(reversed(EXPECTED.columns)).with_columns(
        pl.col("age").cast(pl.Int16),
        pl.col("patient_id").cast(pl.Float64),  # whole numbers stored as float are fine
        pl.col("temperature_c").cast(pl.Float32).cast(pl.Float64),
        pl.col("ward").cast(pl.Categorical),
    )
    out = read_upload(parquet(native), P, SCHEMA)
    expected = EXPECTED.with_columns(pl.col("temperature_c").cast(pl.Float32).cast(pl.Float64))
    assert_frame_equal(out, expected)


def test_parquet_of_strings_is_converted_like_csv() -> None:
    text = EXPECTED.with_columns(pl.all().cast(pl.String)).with_columns(note=pl.lit(""))
    out = read_upload(parquet(text), P, SCHEMA)
    assert_frame_equal(out, EXPECTED.with_columns(note=pl.lit(None, pl.String)))


def test_boolean_spellings_bom_crlf_and_blank_lines_are_accepted() -> None:
    rows = [
        f"{i},30,37,day,{word},x" for i, word in enumerate(["TRUE", "False", "Yes", " no ", "1"])
    ]
    data = b"\xef\xbb\xbf" + csv(*rows).replace(b"\n", b"\r\n") + b"\r\n\r\n"
    out = read_upload(data, C, SCHEMA)
    assert out["smoker"].to_list() == [True, False, True, False, True]
    assert out.columns == list(SCHEMA.names)


def test_row_numbers_count_data_rows_including_skipped_blank_lines() -> None:
    data = csv(GOOD_ROWS[0], "", "3,abc,37,day,true,x")
    assert problems(data) == (Problem("age", 3, "an integer"),)


# --- Each kind of bad value, with its column and row --------------------------------


@pytest.mark.parametrize(
    ("bad_row", "column", "expected"),
    [
        ("1,1.5,37,day,true,x", "age", "an integer"),
        ("1,,37,day,true,x", "age", "no empty values"),
        ('1,"  ",37,day,true,x', "age", "no empty values"),
        ("1,151,37,day,true,x", "age", "a number between 0 and 150"),
        ("1,-1,37,day,true,x", "age", "a number between 0 and 150"),
        ("1,30,NaN,day,true,x", "temperature_c", "a finite number"),
        ("1,30,inf,day,true,x", "temperature_c", "a finite number"),
        ("1,30,37.5.1,day,true,x", "temperature_c", "a finite number"),
        ("1,30,29.9,day,true,x", "temperature_c", "a number between 30 and 45"),
        ("1,30,37,day,maybe,x", "smoker", "true/false, 1/0 or yes/no"),
        ("1,30,37,day,,x", "smoker", "no empty values"),
        ("1,30,37,,true,x", "ward", "no empty values"),
        ('1,30,37,"",true,x', "ward", "no empty values"),
        ("1,30,37,nigth,true,x", "ward", "one of the declared categories, not 'nigth'"),
        ("1,30,37,Day,true,x", "ward", "one of the declared categories, not 'Day'"),
    ],
)
def test_each_bad_value_is_reported_at_its_column_and_row(
    bad_row: str, column: str, expected: str
) -> None:
    assert row_problem(bad_row, index=2) == (Problem(column, 2, expected),)


def test_values_within_bounds_inclusive_and_signed_integers_are_fine() -> None:
    out = read_upload(csv("0,0,30,day,1,x", "1,+150,45,night,0,x"), C, SCHEMA)
    assert out["age"].to_list() == [0, 150]
    assert out["temperature_c"].to_list() == [30.0, 45.0]


def test_an_id_with_too_many_rows_is_reported_at_the_first_row_past_the_limit() -> None:
    rows = ["7,30,37,day,1,x", "8,30,37,day,1,x", "7,30,37,day,1,x", " 7 ,30,37,day,1,x"]
    assert problems(csv(*rows)) == (Problem("patient_id", 4, "at most 2 rows per id"),)


def test_parquet_values_are_checked_the_same_way() -> None:
    bad = EXPECTED.with_columns(
        age=pl.Series([34.0, 1.5, 71.0]),  # 1.5 is not an integer
        temperature_c=pl.Series([36.6, float("nan"), None]),
    )
    assert problems(parquet(bad), P) == (
        Problem("age", 2, "an integer"),
        Problem("temperature_c", 2, "a finite number"),
        Problem("temperature_c", 3, "no empty values"),
    )


def test_parquet_nested_column_is_a_column_problem() -> None:
    nested = EXPECTED.with_columns(age=pl.Series([[1], [2], [3]]))
    assert problems(parquet(nested), P) == (
        Problem("age", None, "an integer values, not nested or binary data"),
    )


# --- Columns and file structure ------------------------------------------------------


def test_missing_extra_and_duplicate_columns_are_each_reported() -> None:
    header = "patient_id,age,temperature_c,ward,smoker,smoker,extra_col,bad name"
    found = problems(csv("1,30,37,day,1,1,z,z", header=header))
    assert found == (
        Problem("note", None, "a column named 'note' (declared)"),
        Problem("smoker", None, "each column named once"),
        Problem("extra_col", None, "no undeclared columns"),
        Problem(None, None, "no undeclared columns (header field 8)"),
    )


def test_a_file_without_header_does_not_echo_its_first_row() -> None:
    found = problems(csv(*GOOD_ROWS[1:], header=GOOD_ROWS[0]))
    assert found[0] == Problem(None, None, "a header row naming the declared columns")
    assert {p.column for p in found[1:]} == set(SCHEMA.names)
    assert "first" not in str(IngestError(found))


@pytest.mark.parametrize("data", [b"", b"\n", csv(), csv("", "")])
def test_a_file_without_data_rows_is_rejected(data: bytes) -> None:
    found = problems(data)
    assert len(found) == 1 and found[0].column is None
    assert found[0].expected in {"at least one data row", "a CSV file with a header row"}


def test_a_csv_header_alone_means_no_data_rows() -> None:
    assert problems(csv()) == (Problem(None, None, "at least one data row"),)


def test_latin1_text_is_rejected_as_not_utf8() -> None:
    data = csv("1,30,37,day,1,café").decode().encode("latin-1")
    (problem,) = problems(data)
    assert problem.expected.startswith("UTF-8 text, or an encoding Veil can tell")
    assert "--encoding gb18030" in problem.expected


def test_malformed_files_are_one_generic_file_level_problem() -> None:
    assert problems(csv("1,30,37,day,1,x,surplus"))[0].column is None
    assert problems(b"PAR1 not really parquet PAR1", P)[0].expected == "a readable Parquet file"


# --- Limits ------------------------------------------------------------------------


def test_too_large_an_upload_is_rejected_before_parsing_and_names_the_setting() -> None:
    data = csv(*GOOD_ROWS)
    (found,) = problems(data + b"\xff", limits=IngestLimits(max_bytes=len(data)))
    assert f"at most {len(data)} bytes" in found.expected
    assert "VEIL_MAX_UPLOAD_BYTES" in found.expected
    assert read_upload(data, C, SCHEMA, IngestLimits(max_bytes=len(data))).height == 3


def test_row_and_column_limits() -> None:
    data = csv(*GOOD_ROWS)
    assert problems(data, limits=IngestLimits(max_rows=2)) == (
        Problem(None, None, "at most 2 data rows"),
    )
    assert read_upload(data, C, SCHEMA, IngestLimits(max_rows=3)).height == 3
    assert problems(data, limits=IngestLimits(max_columns=5)) == (
        Problem(None, None, "at most 5 columns"),
    )


def test_problems_stop_at_the_limit_in_row_order_and_the_summary_counts_all() -> None:
    rows = [f"{i},x,37,day,maybe,z" for i in range(10)]  # 2 problems per row
    with pytest.raises(IngestError) as caught:
        read_upload(csv(*rows), C, SCHEMA, IngestLimits(max_problems=3))
    error = caught.value
    assert error.problems == (
        Problem("age", 1, "an integer"),
        Problem("smoker", 1, "true/false, 1/0 or yes/no"),
        Problem("age", 2, "an integer"),
    )
    assert error.total == 20
    assert str(error).startswith("20 problems:\n  - column 'age', row 1: expected an integer")
    assert str(error).endswith("... and 15 more")


# --- Privacy: no value of a non-public column in any message ---------------------------

SECRETS = ["SECRET-7731", "987654.321", "4242424242", "TOPSECRET", "SECRET-CAT-9", "55501"]
SECRET_SCHEMA = dataclasses.replace(
    SCHEMA,
    columns=(
        *SCHEMA.columns[:5],
        ColumnSpec("note", ColumnType.STRING, ColumnClass.SECRET, categories=("a", "b")),
    ),
)


def assert_no_secret(error: IngestError) -> None:
    texts = [str(error), repr(error), *(str(p) for p in error.problems)]
    texts += [f"{p.column} {p.expected}" for p in error.problems]
    for secret in SECRETS:
        assert not any(secret in text for text in texts), secret
    # The parser's own exception, which quotes data, is not chained either.
    assert error.__cause__ is None and error.__context__ is None


def caught(data: bytes, fmt: FileFormat = C) -> IngestError:
    with pytest.raises(IngestError) as info:
        read_upload(data, fmt, SECRET_SCHEMA)
    assert_no_secret(info.value)
    return info.value


def test_bad_values_of_non_public_columns_are_never_quoted() -> None:
    rows = [
        "1,SECRET-7731,987654.321,day,TOPSECRET,SECRET-CAT-9",
        "4242424242,30,37,day,1,a",
        "55501,30,37,day,1,a",
        "55501,30,37,day,1,a",
        "55501,30,37,day,1,a",
    ]
    found = caught(csv(*rows)).problems
    assert [(p.column, p.row) for p in found] == [
        ("age", 1),
        ("temperature_c", 1),
        ("smoker", 1),
        ("note", 1),
        ("patient_id", 2),
        ("patient_id", 5),
    ]


def test_parser_errors_and_headerless_files_quote_no_value() -> None:
    caught(csv('1,30,37,day,1,"SECRET-7731'))  # unterminated quote
    caught(csv("1,30,37,day,1,SECRET-7731,TOPSECRET"))  # ragged row
    caught(csv("1,30,37,day,1,SECRET-7731", header="SECRET-CAT-9,TOPSECRET"))
    caught(csv("1,30,37,day,1,café SECRET-7731").decode().encode("latin-1"))
    caught(b"PAR1" + b"SECRET-7731" * 10, P)
    good = parquet(EXPECTED.with_columns(note=pl.lit("TOPSECRET")))
    caught(good[:-12], P)  # truncated Parquet


def test_public_columns_may_show_the_offending_value() -> None:
    floor = ColumnSpec("floor", ColumnType.INTEGER, ColumnClass.PUBLIC, lower=0, upper=9)
    schema = DatasetSchema((floor,))
    assert problems(b"floor\n3\nthird\n12\n", schema=schema) == (
        Problem("floor", 2, "an integer, not 'third'"),
        Problem("floor", 3, "a number between 0 and 9, not '12'"),
    )


def test_a_public_value_is_shown_at_most_40_characters_long() -> None:
    (found,) = row_problem("1,30,37," + "n" * 500 + ",true,x")
    shown = found.expected.split(", not ")[1]
    assert len(shown) == 40 and shown.startswith("'nnn")


# --- Large uploads: Parquet output, batches, the fast and the exact pass ----------------


def test_encode_upload_writes_the_checked_rows_as_parquet() -> None:
    for data, fmt in [(csv(*GOOD_ROWS), C), (parquet(EXPECTED), P)]:
        encoded = encode_upload(data, fmt, SCHEMA)
        assert encoded.rows == 3
        assert_frame_equal(pl.read_parquet(io.BytesIO(encoded.parquet)), EXPECTED)


def test_encode_upload_reports_what_read_upload_reports() -> None:
    data = csv(*GOOD_ROWS, "3,abc,37,nigth,maybe,x", "", "1,30,37,day,1,x")
    with pytest.raises(IngestError) as read:
        read_upload(data, C, SCHEMA)
    with pytest.raises(IngestError) as encoded:
        encode_upload(data, C, SCHEMA)
    assert encoded.value.problems == read.value.problems
    assert encoded.value.total == read.value.total == 4


@pytest.mark.parametrize(
    ("rows", "fast"),
    [
        (GOOD_ROWS, True),
        # What the typed CSV reader parses as the exact pass does: signs, exponents, zeros,
        # a leading space, quotes; booleans as usually spelled; quoted commas and newlines.
        (["+1, 0034,3.66e1,day,TRUE,first", '" 2",-0,.37E2,night,Yes,"a,b"'], True),
        (['0005,150,45.,day,0,"two\nlines"', "7,0,30,night,False,"], True),
        # What the fast pass leaves to the exact pass: trailing spaces, unusual spellings,
        # blank lines.
        (["1,34 ,36.6,day,true,x", "2,34,36.6,day, no ,x"], False),
        (["1,34,36.6,day,tRUE,x", "", "2,34,36.6,day,true,x"], False),
    ],
)
def test_the_fast_pass_accepts_only_what_the_exact_pass_accepts_the_same_way(
    rows: list[str], fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = csv(*rows).replace(b"\n", b"\r\n")
    taken: list[bool] = []
    real_fast = ingest._fast

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real_fast(*args, **kwargs)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(ingest, "_fast", spy)
    accepted = read_upload(data, C, SCHEMA)
    assert taken == [fast]
    monkeypatch.setattr(ingest, "_fast", lambda *args, **kwargs: None)  # the exact pass alone
    assert_frame_equal(accepted, read_upload(data, C, SCHEMA))


def test_a_row_of_blank_numbers_is_not_a_blank_line() -> None:
    # The typed reader reads "  " and "" in a numeric column as null, like an empty field.
    for blankish in ['"  ",,,,,', '"",,,,,', " ,,,,,"]:
        found = problems(csv(GOOD_ROWS[0], blankish))
        assert found == tuple(
            Problem(name, 2, "no empty values") for name in SCHEMA.names if name != "note"
        )
    nullable = DatasetSchema(
        tuple(dataclasses.replace(c, nullable=True) for c in SCHEMA.columns), PrivacyUnit()
    )
    out = read_upload(csv(GOOD_ROWS[0], '"  ",,,,,', ",,,,,"), C, nullable)
    assert out.height == 2 and out.row(1) == (None,) * 6


def test_rows_are_numbered_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "_BATCH_ROWS", 1000)
    rows = [f"{i},30,37,day,true,x" for i in range(5000)]
    rows[0] = "0,abc,37,day,true,x"
    rows[2345] = "2345,30,37,nigth,true,x"
    rows[3000] = rows[4999] = "7,30,37,day,true,x"  # id 7: rows 8, 3002 and 5001 (at most 2)
    data = csv(*rows[:2000], "", *rows[2000:])  # a blank line: row 2001, skipped
    batches: list[int] = []
    check = ingest_values.Problems.check

    def counted(self: ingest_values.Problems, batch: pl.DataFrame) -> None:
        batches.append(batch.height)
        check(self, batch)

    monkeypatch.setattr(ingest_values.Problems, "check", counted)
    with pytest.raises(IngestError) as caught:
        read_upload(data, C, SCHEMA, IngestLimits(max_problems=3))
    assert caught.value.problems == (
        Problem("age", 1, "an integer"),
        Problem("ward", 2347, "one of the declared categories, not 'nigth'"),
        Problem("patient_id", 5001, "at most 2 rows per id"),
    )
    assert caught.value.total == 3 and batches == [1000] * 5 + [1]
    assert problems(data, limits=IngestLimits(max_rows=4000)) == (
        Problem(None, None, "at most 4000 data rows"),
    )


def test_parquet_rows_of_nulls_are_rows_not_blank_lines() -> None:
    nullable = DatasetSchema(
        tuple(dataclasses.replace(c, nullable=True) for c in SCHEMA.columns), PrivacyUnit()
    )
    nulls = EXPECTED.clear(1).vstack(EXPECTED)
    out = read_upload(parquet(nulls), P, nullable)
    assert out.height == 4 and out.row(0) == (None,) * 6


# --- The declaration ---------------------------------------------------------------


def spec(name: str = "x", **changes: Any) -> ColumnSpec:
    base = ColumnSpec(name, ColumnType.INTEGER, ColumnClass.INTERNAL, lower=0, upper=1)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("columns", "unit", "column", "expected_part"),
    [
        ((), PrivacyUnit(), None, "at least one declared column"),
        ((spec("1x"),), PrivacyUnit(), "1x", "a column name"),
        ((spec("a-b"),), PrivacyUnit(), "a-b", "a column name"),
        ((spec("x" * 65),), PrivacyUnit(), "x" * 37 + "…", "a column name"),
        ((spec(), spec()), PrivacyUnit(), "x", "a unique column name"),
        ((spec(lower=None),), PrivacyUnit(), "x", "finite bounds"),
        ((spec(upper=float("inf")),), PrivacyUnit(), "x", "finite bounds"),
        ((spec(lower=1, upper=1),), PrivacyUnit(), "x", "lower < upper"),
        ((spec(type=ColumnType.BOOLEAN),), PrivacyUnit(), "x", "no bounds"),
        ((spec(categories=("a",)),), PrivacyUnit(), "x", "no categories"),
        (
            (
                spec(
                    type=ColumnType.STRING, column_class=ColumnClass.PUBLIC, lower=None, upper=None
                ),
            ),
            PrivacyUnit(),
            "x",
            "declared categories",
        ),
        (
            (spec(type=ColumnType.STRING, lower=None, upper=None, categories=("a", "a")),),
            PrivacyUnit(),
            "x",
            "declared categories",
        ),
        (
            (spec(type=ColumnType.STRING, lower=None, upper=None, categories=("",)),),
            PrivacyUnit(),
            "x",
            "declared categories",
        ),
        (
            (
                spec(
                    type=ColumnType.STRING,
                    column_class=ColumnClass.PUBLIC,
                    lower=None,
                    upper=None,
                    categories=tuple(str(i) for i in range(1001)),
                ),
            ),
            PrivacyUnit(),
            "x",
            "declared categories",
        ),
        ((spec(),), PrivacyUnit("y"), "y", "a declared column"),
        ((spec(type=ColumnType.FLOAT),), PrivacyUnit("x"), "x", "not float"),
        ((spec(nullable=True),), PrivacyUnit("x"), "x", "not nullable"),
        ((spec(),), PrivacyUnit("x", 0), "x", "max_rows_per_id between 1 and 1000"),
        ((spec(),), PrivacyUnit("x", 1001), "x", "max_rows_per_id between 1 and 1000"),
        ((spec(),), PrivacyUnit(None, 2), None, "max_rows_per_id 1"),
    ],
)
def test_bad_declarations_are_rejected(
    columns: tuple[ColumnSpec, ...], unit: PrivacyUnit, column: str | None, expected_part: str
) -> None:
    with pytest.raises(IngestError) as info:
        validate_schema(DatasetSchema(columns, unit))
    (found,) = info.value.problems
    assert found.column == column and found.row is None
    assert expected_part in found.expected


def test_good_declarations_pass_and_bad_ones_fail_read_upload_too() -> None:
    validate_schema(SCHEMA)
    validate_schema(DatasetSchema((spec("_a1", lower=-1.5, upper=2.5),), PrivacyUnit("_a1", 1000)))
    with pytest.raises(IngestError):
        read_upload(b"x\n1\n", C, DatasetSchema((spec(upper=None),)))


def test_only_nullable_strings_need_no_checks() -> None:
    schema = DatasetSchema((ColumnSpec("s", ColumnType.STRING, ColumnClass.SECRET, nullable=True),))
    out = read_upload(b"s\n\nhello\n\n", C, schema)
    assert out["s"].to_list() == ["hello"]


# --- Format detection and messages -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "filename", "expected"),
    [
        (b"PAR1....PAR1", None, None, P),
        (b"PAR1....PAR1", "application/vnd.apache.parquet", "x.parquet", P),
        (b"PAR1....PAR1", "application/octet-stream", "x.csv", P),
        (b"a,b\n1,2\n", None, None, C),
        (b"a,b\n1,2\n", "text/csv; charset=utf-8", "x.csv", C),
        (b"a,b\n1,2\n", "application/vnd.ms-excel", "x.csv", C),
        (b"a,b\n1,2\n", "", "data", C),
        (b"a,b\n1,2\n", "TEXT/CSV", None, C),
    ],
)
def test_detect_format(
    data: bytes, content_type: str | None, filename: str | None, expected: FileFormat
) -> None:
    assert detect_format(data, content_type, filename) is expected


@pytest.mark.parametrize(
    ("content_type", "filename", "expected_part"),
    [
        ("application/json", None, "content type 'application/json' is not supported"),
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", None, "not supp"),
        ("application/vnd.apache.parquet", None, "does not start with PAR1"),
        (None, "data.parquet", "does not start with PAR1"),
    ],
)
def test_detect_format_rejects_unsupported_or_mislabelled_uploads(
    content_type: str | None, filename: str | None, expected_part: str
) -> None:
    with pytest.raises(IngestError) as info:
        detect_format(b"a,b\n1,2\n", content_type, filename)
    (found,) = info.value.problems
    assert found.column is None and expected_part in found.expected


def test_problem_texts() -> None:
    assert str(Problem("temperature_c", 17, "a number between 0 and 150")) == (
        "column 'temperature_c', row 17: expected a number between 0 and 150"
    )
    assert str(Problem("age", None, "x")) == "column 'age': expected x"
    assert str(Problem(None, None, "UTF-8 text")) == "expected UTF-8 text"
    assert str(IngestError([Problem(None, None, "y")])) == "1 problem:\n  - expected y"
    assert isinstance(IngestError([]), ValueError)
