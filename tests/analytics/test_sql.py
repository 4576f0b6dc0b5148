"""SQL queries: the subset translates to the same plan as the JSON document; all else is
refused with a reason that says where and how to fix it, and never quotes a literal."""

# ruff: noqa: S608 - the SQL here is only parsed by the translator, never run by a database
from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.private_query import QueryError, run_private_query, validate_query
from analytics.query_document import parse_query, query_document
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivateQuery
from analytics.sql import MAX_SQL_CHARS, SqlError, translate_sql

SECRET = "zz-data-value-93"  # a literal that must never come back in a message

# SQL on the left, the JSON document an analyst would write for it on the right.
SAME: list[tuple[str, dict[str, Any]]] = [
    ("SELECT COUNT(*) FROM sensors", {"aggregates": [{"kind": "count"}]}),
    ("select count(t) from sensors", {"aggregates": [{"kind": "count", "column": "t"}]}),
    ("SELECT SUM(t) FROM sensors", {"aggregates": [{"kind": "sum", "column": "t"}]}),
    ("SELECT AVG(t) FROM sensors", {"aggregates": [{"kind": "mean", "column": "t"}]}),
    ("SELECT MEDIAN(t) FROM sensors", {"aggregates": [{"kind": "median", "column": "t"}]}),
    (
        "SELECT QUANTILE(t, 0.9) FROM sensors",
        {"aggregates": [{"kind": "quantile", "column": "t", "q": 0.9}]},
    ),
    (
        "SELECT PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY t) FROM sensors",
        {"aggregates": [{"kind": "quantile", "column": "t", "q": 0.25}]},
    ),
    (
        "SELECT shift, COUNT(*), AVG(t) FROM sensors GROUP BY shift",
        {
            "aggregates": [{"kind": "count"}, {"kind": "mean", "column": "t"}],
            "group_by": ["shift"],
        },
    ),
    (
        "SELECT COUNT(*) FROM sensors GROUP BY shift, line",
        {"aggregates": [{"kind": "count"}], "group_by": ["shift", "line"]},
    ),
    (
        "SELECT COUNT(*) FROM sensors WHERE line = 'L1' AND t < 90.5",
        {
            "aggregates": [{"kind": "count"}],
            "where": [
                {"column": "line", "op": "=", "value": "L1"},
                {"column": "t", "op": "<", "value": 90.5},
            ],
        },
    ),
    (
        "SELECT COUNT(*) FROM sensors WHERE t <> 3 AND t != 4 AND t <= 5 AND t >= -6 AND t > 0",
        {
            "aggregates": [{"kind": "count"}],
            "where": [
                {"column": "t", "op": "!=", "value": 3},
                {"column": "t", "op": "!=", "value": 4},
                {"column": "t", "op": "<=", "value": 5},
                {"column": "t", "op": ">=", "value": -6},
                {"column": "t", "op": ">", "value": 0},
            ],
        },
    ),
    (
        "SELECT COUNT(*) FROM sensors WHERE 10 < t AND (ok = TRUE)",
        {
            "aggregates": [{"kind": "count"}],
            "where": [
                {"column": "t", "op": ">", "value": 10},
                {"column": "ok", "op": "=", "value": True},
            ],
        },
    ),
    (
        "SELECT COUNT(*) FROM sensors WHERE line IN ('L1', 'L2') AND t BETWEEN 1 AND 2",
        {
            "aggregates": [{"kind": "count"}],
            "where": [
                {"column": "line", "op": "in", "value": ["L1", "L2"]},
                {"column": "t", "op": ">=", "value": 1},
                {"column": "t", "op": "<=", "value": 2},
            ],
        },
    ),
    (
        "SELECT 班次, AVG(主轴温度) FROM \"设备数据\" WHERE 产线 = '一号线' GROUP BY 班次",
        {
            "aggregates": [{"kind": "mean", "column": "主轴温度"}],
            "group_by": ["班次"],
            "where": [{"column": "产线", "op": "=", "value": "一号线"}],
        },
    ),
    (
        'SELECT COUNT("count") FROM sensors',  # a keyword as a column: quoted
        {"aggregates": [{"kind": "count", "column": "count"}]},
    ),
]


@pytest.mark.parametrize(("sql", "document"), SAME)
def test_sql_translates_to_the_json_plan(sql: str, document: dict[str, Any]) -> None:
    translation = translate_sql(sql)
    assert translation.document == document
    assert translation.query == parse_query(document)
    assert query_document(translation.query) == document


def test_from_names_the_dataset_by_id_or_name() -> None:
    assert translate_sql("SELECT COUNT(*) FROM ds_7f3a").dataset == "ds_7f3a"
    assert translate_sql('SELECT COUNT(*) FROM "Line sensors 2024"').dataset == (
        "Line sensors 2024"
    )


# (SQL, code, words the reason must contain: the construct, where, and what to do)
REFUSED: list[tuple[str, str, tuple[str, ...]]] = [
    ("SELECT COUNT(*) FROM a JOIN b ON a.k = b.k", "sql_join", ("FROM", "JOIN", "templates")),
    ("SELECT COUNT(*) FROM a, b", "sql_join", ("JOIN", "one dataset")),
    ("SELECT a.k, COUNT(*) AS n FROM a x JOIN b y ON x.k = y.k", "sql_join", ("JOIN",)),
    ("SELECT COUNT(*) FROM a LEFT JOIN b USING (k)", "sql_join", ("column 34", "JOIN")),
    ("SELECT COUNT(*) FROM (SELECT * FROM a)", "sql_subquery", ("subqueries",)),
    ("SELECT COUNT(*) FROM a WHERE k IN (SELECT k FROM b)", "sql_subquery", ("WHERE",)),
    ("WITH x AS (SELECT 1) SELECT COUNT(*) FROM x", "sql_unsupported", ("WITH",)),
    ("SELECT COUNT(*) FROM a UNION SELECT COUNT(*) FROM b", "sql_unsupported", ("UNION",)),
    ("SELECT SUM(t) OVER () FROM a", "sql_unsupported", ("window functions", "GROUP BY")),
    ("SELECT COUNT(*) FROM a GROUP BY s HAVING COUNT(*) > 5", "sql_unsupported", ("HAVING",)),
    ("SELECT COUNT(*) FROM a ORDER BY 1", "sql_unsupported", ("ORDER BY", "not needed")),
    ("SELECT COUNT(*) FROM a LIMIT 10", "sql_unsupported", ("LIMIT", "every group")),
    ("SELECT * FROM a", "sql_unsupported", ("SELECT *", "column 8")),
    ("SELECT t FROM a", "sql_unsupported", ("neither aggregated nor in GROUP BY",)),
    ("SELECT s, COUNT(*) FROM a GROUP BY k", "sql_unsupported", ("column s",)),
    ("SELECT SUM(t + 1) FROM a", "sql_unsupported", ("arithmetic",)),
    ("SELECT SUM(t) * 2 FROM a", "sql_unsupported", ("arithmetic",)),
    ("SELECT COUNT(*) FROM a WHERE t * 2 > 1", "sql_unsupported", ("WHERE", "arithmetic")),
    ("SELECT MAX(t) FROM a", "sql_function", ("MAX", "AVG(col)")),
    ("SELECT STDDEV(t) FROM a", "sql_function", ("STDDEV",)),
    ("SELECT my_udf(t) FROM a", "sql_function", ("MY_UDF",)),
    ("SELECT COUNT(DISTINCT t) FROM a", "sql_unsupported", ("DISTINCT",)),
    ("SELECT DISTINCT s FROM a", "sql_unsupported", ("DISTINCT",)),
    ("SELECT COUNT(*) AS n FROM a", "sql_unsupported", ("aliases",)),
    ("SELECT COUNT(*) FROM a AS x", "sql_unsupported", ("aliases",)),
    ("SELECT COUNT(*) FROM a WHERE s = 1 OR s = 2", "sql_unsupported", ("OR", "IN (")),
    ("SELECT COUNT(*) FROM a WHERE NOT s = 1", "sql_unsupported", ("NOT",)),
    ("SELECT COUNT(*) FROM a WHERE s IS NULL", "sql_unsupported", ("IS NULL",)),
    ("SELECT COUNT(*) FROM a WHERE s = NULL", "sql_unsupported", ("NULL",)),
    (f"SELECT COUNT(*) FROM a WHERE s LIKE '{SECRET}%'", "sql_unsupported", ("LIKE",)),
    ("SELECT COUNT(*) FROM a WHERE s = t", "sql_unsupported", ("two columns",)),
    ("SELECT COUNT(*) FROM a WHERE 1 = 1", "sql_unsupported", ("WHERE",)),
    ("SELECT COUNT(*) FROM a WHERE s = ?", "sql_unsupported", ("parameters",)),
    ("SELECT COUNT(*) FROM a WHERE CAST(s AS INT) = 1", "sql_unsupported", ("CAST",)),
    ("SELECT COUNT(*) FROM a WHERE t = CASE WHEN 1 THEN 2 END", "sql_unsupported", ("CASE",)),
    ("SELECT COUNT(*) FROM a GROUP BY 1", "sql_unsupported", ("GROUP BY", "positions")),
    ("SELECT COUNT(*) FROM a GROUP BY ROLLUP(s)", "sql_unsupported", ("ROLLUP",)),
    ("SELECT COUNT(*) FROM a GROUP BY s + 1", "sql_unsupported", ("arithmetic",)),
    ("SELECT COUNT(*) FROM db.a", "sql_unsupported", ("FROM", "prefix")),
    ("SELECT a.t, COUNT(*) FROM a GROUP BY a.t", "sql_unsupported", ("table prefix",)),
    ("SELECT COUNT(*)", "sql_unsupported", ("FROM is missing",)),
    ("SELECT s FROM a GROUP BY s", "sql_unsupported", ("at least one aggregate",)),
    ("SELECT SUM(COUNT(*)) FROM a", "sql_unsupported", ("nested",)),
    ("SELECT QUANTILE(t, 1.5) FROM a", "sql_unsupported", ("strictly between 0 and 1",)),
    ("SELECT QUANTILE(t, 'x') FROM a", "sql_unsupported", ("strictly between 0 and 1",)),
    (
        "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY t DESC) FROM a",
        "sql_unsupported",
        ("DESC", "1 - q"),
    ),
    (
        "SELECT PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY t) FROM a",
        "sql_unsupported",
        ("PERCENTILE_CONT",),
    ),
    ("SELECT COUNT(*) FROM a WHERE t = 1e999", "sql_unsupported", ("constant",)),
    ("SELECT COUNT(*) FROM a WHERE t = -'x'", "sql_unsupported", ("constant",)),
    ('SELECT COUNT(*) FROM a WHERE "1st" = 2', "sql_unsupported", ("column name",)),
    ("DELETE FROM a", "sql_not_select", ("DELETE", "only a SELECT")),
    ("DROP TABLE a", "sql_not_select", ("only a SELECT",)),
    ("INSERT INTO a VALUES (1)", "sql_not_select", ("only a SELECT",)),
    ("SELECT COUNT(*) FROM a; DROP TABLE a", "sql_syntax", ("exactly one",)),
    (f"SELECT COUNT(*) FROM a WHERE s = '{SECRET}", "sql_syntax", ("unclosed quote",)),
    ("SELECT COUNT(* FROM a", "sql_syntax", ("line 1",)),
    ("", "sql_syntax", ("one SELECT",)),
    (";", "sql_syntax", ("exactly one",)),
    ("SELECT " + "COUNT(*), " * 9 + "COUNT(*) FROM a", "sql_invalid", ("1 to 8 aggregates",)),
]


@pytest.mark.parametrize(("sql", "code", "words"), REFUSED)
def test_refusals_say_what_where_and_how(sql: str, code: str, words: tuple[str, ...]) -> None:
    with pytest.raises(SqlError) as caught:
        translate_sql(sql)
    message = str(caught.value)
    assert caught.value.code == code, message
    for word in words:
        assert word in message, message
    assert SECRET not in message


def test_the_position_is_the_refused_constructs() -> None:
    with pytest.raises(SqlError) as caught:
        translate_sql("SELECT COUNT(*)\nFROM a\nWHERE s = 1\n  OR s = 2")
    assert str(caught.value).startswith("WHERE at line 3, column 7")


def test_literals_are_never_quoted_in_a_refusal() -> None:
    for sql in (
        f"SELECT COUNT(*) FROM a WHERE s = '{SECRET}' OR s = 'b'",
        f"SELECT COUNT(*) FROM a WHERE s = '{SECRET}' AND t = u",
        f"SELECT QUANTILE(t, '{SECRET}') FROM a",
        f"SELECT COUNT(*) FROM a WHERE s IN ('{SECRET}', s)",
        f"SELECT COUNT(*) FROM a WHERE s = '{SECRET}' + 1",
        f"SELECT {SECRET.replace('-', '_')}(t) FROM a WHERE x = '{SECRET}'",
    ):
        with pytest.raises(SqlError) as caught:
            translate_sql(sql)
        assert SECRET not in str(caught.value)


def test_long_text_is_refused_before_parsing() -> None:
    with pytest.raises(SqlError, match="longer than"):
        translate_sql("SELECT COUNT(*) FROM a WHERE " + "t = 1 AND " * MAX_SQL_CHARS + "t = 1")


def test_deep_nesting_is_a_query_error() -> None:
    with pytest.raises(SqlError):
        translate_sql("SELECT COUNT(*) FROM a WHERE " + "(" * 3000 + "t = 1" + ")" * 3000)


_SQLISH = st.sampled_from(
    ["SELECT", "FROM", "WHERE", "GROUP BY", "COUNT(*)", "AVG(t)", "(", ")", ",", "'", '"',
     "=", "<", "IN", "AND", "OR", "JOIN", "a", "t", "1", "0.5", ";", "--", "/*", "*", "\n",
     "WITHIN GROUP (ORDER BY t)", "PERCENTILE_CONT(", "OVER", "-", "NULL", "`", "[", "$1"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_SQLISH, max_size=30).map(" ".join)))
def test_any_text_is_translated_or_refused_with_a_query_error(text: str) -> None:
    try:
        translation = translate_sql(text)
    except SqlError as error:
        assert error.code.startswith("sql_")
        assert isinstance(str(error), str)
    else:
        assert isinstance(translation.query, PrivateQuery)


@settings(max_examples=50, deadline=None)
@given(st.from_type(object).filter(lambda v: not isinstance(v, str)))
def test_anything_but_text_is_refused(value: object) -> None:
    with pytest.raises(SqlError):
        translate_sql(value)


# ---------------------------------------------------------------- WHERE on real data

SCHEMA = DatasetSchema(
    (
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=("L1", "L2")),
        ColumnSpec("t", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, 0.0, 100.0, nullable=True),
        ColumnSpec("ok", ColumnType.BOOLEAN, ColumnClass.INTERNAL),
        ColumnSpec("recipe", ColumnType.FLOAT, ColumnClass.SECRET, 0.0, 1.0),
    )
)


def _frame(n: int) -> pl.DataFrame:
    # L1: t = 10 on every row; L2: t = 80; every fourth row not ok; some NaN on L2.
    return pl.DataFrame(
        {
            "line": ["L1" if i % 2 == 0 else "L2" for i in range(n)],
            "t": [
                10.0 if i % 2 == 0 else (float("nan") if i % 10 == 1 else 80.0) for i in range(n)
            ],
            "ok": [i % 4 != 3 for i in range(n)],
            "recipe": [0.5] * n,
        }
    )


def test_where_filters_rows_inside_the_dp_measurement() -> None:
    n = 100_000
    frame = _frame(n)
    everything = run_private_query(
        frame, SCHEMA, translate_sql("SELECT COUNT(*) FROM d").query, 1.0
    )
    query = translate_sql("SELECT COUNT(*), AVG(t) FROM d WHERE line = 'L2' AND t > 50").query
    release = run_private_query(frame, SCHEMA, query, 1.0)
    count, mean = release.rows[0].values
    # Laplace noise of scale 2 (count: 1 of 2 epsilon units... and a mean): a tolerance
    # of 100 rows is over 20 noise scales, so a failure is a bug, not bad luck.
    assert abs(everything.rows[0].values[0].value - n) < 100
    assert abs(count.value - 0.4 * n) < 100  # L2 rows less the NaN ones (one in five)
    assert abs(mean.value - 80.0) < 0.5
    assert release.epsilon == pytest.approx(1.0)


def test_where_with_groups_and_in_and_booleans() -> None:
    n = 80_000
    sql = "SELECT line, COUNT(*) FROM d WHERE ok = TRUE AND line IN ('L1') GROUP BY line"
    release = run_private_query(_frame(n), SCHEMA, translate_sql(sql).query, 1.0)
    counts = {row.group["line"]: row.values[0].value for row in release.rows if row.group}
    assert abs(counts["L1"] - n / 2) < 100  # L1 rows are the even ones, all of them ok
    assert abs(counts["L2"]) < 100  # filtered out: only noise (public keys get a value)


def test_where_on_a_secret_or_unknown_column_or_wrong_type_is_refused() -> None:
    cases = {
        "SELECT COUNT(*) FROM d WHERE recipe > 0.1": "secret",
        "SELECT COUNT(*) FROM d WHERE nope = 1": "not declared",
        "SELECT COUNT(*) FROM d WHERE t = 'x'": "compare it with numbers",
        "SELECT COUNT(*) FROM d WHERE ok > 1": "compare it with true or false",
        "SELECT COUNT(*) FROM d WHERE line = 'L9'": "not a declared category",
        "SELECT COUNT(*) FROM d WHERE line IN ('L1', 3)": "one type",
    }
    for sql, expected in cases.items():
        with pytest.raises(QueryError) as caught:
            validate_query(SCHEMA, translate_sql(sql).query)
        assert expected in str(caught.value), sql
        assert "L9" not in str(caught.value)
