"""Chinese data at ingestion: the column-name rule, text encodings, malformed records named
by their row, and upload suggestions that never hold a value of the data."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.column_names import column_name_problem, is_column_name, normalise
from analytics.query_document import parse_query
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from analytics.training_document import parse_training
from sandbox.console.enterprise_upload import FilePart, detect_columns
from sandbox.ingest import parse as ingest
from sandbox.ingest.suggest import suggest

SCHEMA = DatasetSchema(
    (
        ColumnSpec("设备编号", ColumnType.STRING, ColumnClass.INTERNAL),
        ColumnSpec("主轴温度", ColumnType.FLOAT, ColumnClass.INTERNAL, 0, 150),
        ColumnSpec("件数", ColumnType.INTEGER, ColumnClass.INTERNAL, 0, 100, nullable=True),
    )
)
GOOD = "设备编号,主轴温度,件数\n机台-01,61.5,3\n机台-02,70.25,4\n"


def read(data: bytes, encoding: str | None = None) -> pl.DataFrame:
    return ingest.read_upload(data, ingest.FileFormat.CSV, SCHEMA, encoding=encoding)


def problems(data: bytes, encoding: str | None = None) -> list[str]:
    with pytest.raises(ingest.IngestError) as caught:
        read(data, encoding)
    return [str(p) for p in caught.value.problems]


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["设备编号", "主轴温度", "temperature_c", "_x", "温度2", "Größe"])
def test_unicode_identifiers_are_column_names(name: str) -> None:
    assert is_column_name(name)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("2号机", "not starting with a digit"),
        ("主轴 温度", "letters (any script)"),
        ("a" * 65, "1 to 64"),
        ("主轴\u200b温度", "invisible"),  # zero-width space
        ("abc\u202edef", "invisible"),  # right-to-left override
        ("\ufeffname", "invisible"),  # a BOM glued to a header
        ("p\u0430y", "all Latin"),  # a Cyrillic a among Latin letters
        ("", "1 to 64"),
        ("温度\uff11", "half-width"),  # a full-width digit one, typed with an IME
    ],
)
def test_names_that_are_refused_say_why(name: str, why: str) -> None:
    problem = column_name_problem(name)
    assert problem is not None and why in problem
    assert name not in problem or not name  # the rule never quotes the name


def test_names_are_compared_in_nfc() -> None:
    assert normalise("cafe\u0301") == "caf\u00e9" and is_column_name("cafe\u0301")
    assert len("主" * 64) == 64 and is_column_name("主" * 64)


def test_queries_and_training_specs_take_chinese_columns() -> None:
    query = parse_query(
        {"aggregates": [{"kind": "mean", "column": "主轴温度"}], "group_by": ["班次"]}
    )
    assert query.columns_used() == {"主轴温度", "班次"}
    spec = parse_training(
        {
            "family": "logistic_regression",
            "features": ["主轴温度", "振动"],
            "target": "故障",
            "epsilon": 1,
            "delta": 1e-6,
        }
    )
    assert spec.target == "故障"
    with pytest.raises(ValueError, match="invisible"):
        parse_query({"aggregates": [{"kind": "mean", "column": "主轴\u200b温度"}]})


def test_a_declaration_with_a_bad_name_is_refused_without_echoing_much() -> None:
    bad = DatasetSchema((ColumnSpec("主轴\u202e温度", ColumnType.STRING, ColumnClass.INTERNAL),))
    with pytest.raises(ingest.IngestError) as caught:
        ingest.validate_schema(bad)
    assert "invisible" in str(caught.value) and "\u202e" not in str(caught.value)


# ---------------------------------------------------------------- encodings


@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "gb18030", "gbk", "utf-16"])
def test_each_encoding_is_detected(codec: str) -> None:
    frame = read(GOOD.encode(codec))
    assert frame.columns == ["设备编号", "主轴温度", "件数"]
    assert frame["设备编号"].to_list() == ["机台-01", "机台-02"]


def test_an_encoding_can_be_named() -> None:
    assert read(GOOD.encode("gbk"), encoding="GBK").height == 2
    assert read(GOOD.encode("gb18030"), encoding="gb18030").height == 2
    # The wrong one named: said plainly, with no byte or position of the file.
    (problem,) = problems(GOOD.encode("utf-16"), encoding="gb18030")
    assert problem == "expected gb18030 text (the encoding named for this file)"
    (problem,) = problems(GOOD.encode(), encoding="klingon")
    assert problem.startswith("expected an encoding among auto, utf-8")


def test_chinese_text_after_a_long_ascii_start_is_still_detected() -> None:
    schema = DatasetSchema((ColumnSpec("machine", ColumnType.STRING, ColumnClass.INTERNAL),))
    text = "machine\n" + "A1\n" * 600_000 + "机台-02\n"  # the first hanzi after 1.8 MB
    frame = ingest.read_upload(text.encode("gb18030"), ingest.FileFormat.CSV, schema)
    assert frame["machine"].to_list()[-1] == "机台-02"


def test_text_in_an_encoding_that_cannot_be_told_asks_for_it() -> None:
    # Windows-1252 whose bytes happen to decode as GB18030, but do not read as Chinese.
    data = "设备编号,主轴温度,件数\nMüller-Éà,61.5,3\n".encode()
    latin = data.replace("Müller-Éà".encode(), "Müller-Éà".encode("cp1252"))
    (problem,) = problems(latin)
    assert "--encoding gb18030" in problem and "Müller" not in problem
    assert "Müller".encode("cp1252").decode("gb18030", "replace") not in problem


# ---------------------------------------------------------------- malformed records


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("机台-01,61.5,3\n机台-02,70,4,9\n", "row 2: expected 3 fields, found 4"),
        ("机台-01,61.5,3\n机台-02,70\n", "row 2: expected 3 fields, found 2"),
        ("机台-01,61.5,3\n\n机台-02,70\n", "row 3: expected 3 fields, found 2"),  # blank: a row
        ('机台-01,61.5,3\n"机台-02"x,70,4\n', "row 2: expected a well-formed quoted field"),
        ("机台-01,61.5,3\n机台-02,7o,4\n", "column '主轴温度', row 2: expected a finite number"),
    ],
)
def test_a_malformed_record_names_its_row_not_its_value(body: str, expected: str) -> None:
    found = problems(("设备编号,主轴温度,件数\n" + body).encode("gb18030"))
    assert found[0].startswith(expected)
    assert not any(v in found[0] for v in ("机台-02", "7o", "70"))


def test_short_records_are_found_in_a_large_file_too() -> None:
    lines = ["机台-01,61.5,3"] * 5000
    lines[4321] = "机台-01,61.5"
    (problem,) = problems(("设备编号,主轴温度,件数\n" + "\n".join(lines) + "\n").encode())
    assert problem == "row 4322: expected 3 fields, found 2"


# ---------------------------------------------------------------- suggestions


@pytest.mark.parametrize(
    ("name", "kind", "few", "expected"),
    [
        ("配方参数", ColumnType.FLOAT, False, ColumnClass.SECRET),
        ("工艺参数_温度", ColumnType.FLOAT, False, ColumnClass.SECRET),
        ("recipe_p1", ColumnType.FLOAT, False, ColumnClass.SECRET),
        ("oven_setpoint", ColumnType.INTEGER, False, ColumnClass.SECRET),
        ("单价", ColumnType.FLOAT, False, ColumnClass.CONFIDENTIAL),
        ("yield_pct", ColumnType.FLOAT, False, ColumnClass.CONFIDENTIAL),
        ("unitCost", ColumnType.FLOAT, False, ColumnClass.CONFIDENTIAL),
        ("读数", ColumnType.FLOAT, False, ColumnClass.CONFIDENTIAL),  # unknown numeric
        ("主轴温度", ColumnType.FLOAT, False, ColumnClass.INTERNAL),
        ("班次", ColumnType.STRING, True, ColumnClass.PUBLIC),
        ("machine_type", ColumnType.STRING, True, ColumnClass.PUBLIC),
        ("班次", ColumnType.STRING, False, ColumnClass.CONFIDENTIAL),  # many values: not a category
        ("备注", ColumnType.STRING, False, ColumnClass.CONFIDENTIAL),
    ],
)
def test_classes_are_suggested_from_names_conservatively(
    name: str, kind: ColumnType, few: bool, expected: ColumnClass
) -> None:
    assert suggest(name, kind, few_values=few).column_class is expected


def test_a_recipe_column_is_suggested_secret_with_empty_bounds() -> None:
    csv = "machine,recipe_p1,temperature_c,配方比例\n" + "press-01,3.25,71.5,0.5\n" * 30
    columns = {
        c.name: c for c in detect_columns(FilePart("a.csv", "text/csv", csv.encode()), False)
    }
    assert columns["recipe_p1"].suggested_class is ColumnClass.SECRET
    assert columns["配方比例"].suggested_class is ColumnClass.SECRET
    assert columns["temperature_c"].type is ColumnType.FLOAT
    assert not hasattr(columns["temperature_c"], "lower")  # bounds are never suggested


VALUE = st.one_of(
    st.integers(-(10**9), 10**9).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.text("甲乙丙丁ABCxyz-_0123456789", min_size=2, max_size=8),
)


#: Every text a suggestion can hold that is not the column's name: fixed, none from data.
REASONS = {
    str(suggest(name, kind, few_values=few).reason)
    for name in ("配方", "单价", "温度", "班次", "x")
    for kind in ColumnType
    for few in (True, False)
}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(VALUE, min_size=3, max_size=3), min_size=2, max_size=40), st.booleans())
def test_no_suggestion_ever_holds_a_value_of_the_data(rows: list[list[str]], repeat: bool) -> None:
    """Whatever the data, a suggestion holds only fixed texts: a type, a class, a reason from
    a fixed list and a yes/no, so never a value (no bounds, no categories)."""
    rows = rows * 3 if repeat else rows  # repeated values: columns that look like categories
    lines = ["班次,读数,machine"] + [",".join(r) for r in rows]
    sample = FilePart("s.csv", "text/csv", ("\n".join(lines) + "\n").encode())
    for column in detect_columns(sample, False):
        assert set(column.__dataclass_fields__) == {
            "name",
            "type",
            "suggested_class",
            "reason",
            "nullable",
        }
        assert column.name in ("班次", "读数", "machine")
        assert column.type in ColumnType and column.suggested_class in ColumnClass
        assert str(column.reason) in REASONS and isinstance(column.nullable, bool)


def test_a_content_type_may_name_the_charset() -> None:
    assert ingest.charset('text/csv; charset="GBK"') == "GBK"
    assert ingest.charset("text/csv") is None and ingest.charset(None) is None
