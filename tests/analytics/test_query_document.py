"""The query document: its JSON Schema (in sync with docs/) and its strict parser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from analytics.private_query import QueryError
from analytics.query_document import parse_query, query_document, query_json_schema, schema_text
from analytics.schema import Aggregate, AggregateKind, Filter, FilterOp, PrivateQuery

DOCS = Path(__file__).resolve().parents[2] / "docs"
K = AggregateKind
SECRET_VALUE = "alice-7f3a-payroll"
BRIEF_EXAMPLE = {
    "aggregates": [
        {"kind": "count"},
        {"kind": "mean", "column": "temperature_c"},
        {"kind": "quantile", "column": "cycle_time_s", "q": 0.9},
        {"kind": "histogram", "column": "temperature_c", "bins": 10},
    ],
    "group_by": ["shift"],
}


def test_parses_the_documented_example() -> None:
    assert parse_query(BRIEF_EXAMPLE) == PrivateQuery(
        (
            Aggregate(K.COUNT),
            Aggregate(K.MEAN, "temperature_c"),
            Aggregate(K.QUANTILE, "cycle_time_s", q=0.9),
            Aggregate(K.HISTOGRAM, "temperature_c", bins=10),
        ),
        ("shift",),
    )


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [("shift", ("shift",)), (["a", "b"], ("a", "b")), ([], ()), (None, ())],
)
def test_group_by_is_normalised_to_a_tuple(group_by: Any, expected: tuple[str, ...]) -> None:
    assert parse_query({"aggregates": [{"kind": "count"}], "group_by": group_by}).group_by == (
        expected
    )
    assert parse_query({"aggregates": [{"kind": "median", "column": "t"}]}).group_by == ()


def test_whole_number_bins_and_plain_counts() -> None:
    query = parse_query({"aggregates": [{"kind": "histogram", "column": "t", "bins": 10.0}]})
    assert query.aggregates[0].bins == 10 and isinstance(query.aggregates[0].bins, int)
    assert parse_query({"aggregates": [{"kind": "count", "column": "t"}]}).aggregates == (
        Aggregate(K.COUNT, "t"),
    )


def one(aggregate: dict[str, Any]) -> dict[str, Any]:
    return {"aggregates": [{"kind": "count"}, aggregate]}


def where(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"aggregates": [{"kind": "count"}], "where": list(filters)}


ERRORS: list[tuple[Any, str]] = [
    ([], "query: expected a JSON object"),
    ({"aggregates": [{"kind": "count"}], "limit": 3}, "query: unknown field 'limit'"),
    ({}, "aggregates: required"),
    ({"aggregates": []}, "aggregates: expected a list of 1 to 8 aggregates"),
    ({"aggregates": [{"kind": "count"}] * 9}, "aggregates: expected a list of 1 to 8"),
    ({"aggregates": {"kind": "count"}}, "aggregates: expected a list"),
    ({"aggregates": ["count"]}, "aggregates[0]: expected an object"),
    (one({"kind": "avg", "column": "t"}), "aggregates[1].kind: expected one of count, sum, mean"),
    (one({"column": "t"}), "aggregates[1].kind: expected one of"),
    (one({"kind": "quantile", "column": "t", "q": 1.5}), "aggregates[1].q: expected a number "),
    (one({"kind": "quantile", "column": "t", "q": 0}), "strictly between 0 and 1"),
    (one({"kind": "quantile", "column": "t", "q": True}), "aggregates[1].q: expected a number"),
    (one({"kind": "quantile", "column": "t", "q": "0.5"}), "aggregates[1].q: expected a number"),
    (one({"kind": "quantile", "column": "t"}), "aggregates[1].q: required for quantile"),
    (one({"kind": "mean"}), "aggregates[1].column: required for mean"),
    (one({"kind": "mean", "column": "t", "q": 0.5}), "aggregates[1] (mean): unknown field 'q'"),
    (one({"kind": "sum", "column": "t", "bins": 3}), "aggregates[1] (sum): unknown field 'bins'"),
    (one({"kind": "histogram", "column": "t", "bins": 1}), "aggregates[1].bins: expected an "),
    (one({"kind": "histogram", "column": "t", "bins": 101}), "integer from 2 to 100"),
    (one({"kind": "histogram", "column": "t", "bins": 2.5}), "aggregates[1].bins: expected"),
    (one({"kind": "histogram", "column": "t", "bins": False}), "aggregates[1].bins: expected"),
    (one({"kind": "sum", "column": 3}), "aggregates[1].column: expected a column name"),
    (one({"kind": "sum", "column": "1st"}), "aggregates[1].column: expected a column name"),
    (one({"kind": "count", "column": None}), "aggregates[1].column: expected a column name"),
    ({"aggregates": [{"kind": "count"}], "group_by": 3}, "group_by: expected a column name"),
    ({"aggregates": [{"kind": "count"}], "group_by": ["a", 7]}, "group_by[1]: expected a col"),
    ({"aggregates": [{"kind": "count"}], "group_by": ["a", "a"]}, "group_by[1]: column listed"),
    ({"aggregates": [{"kind": "count"}], "group_by": list("abcde")}, "at most 4 of them"),
    ({"aggregates": [{"kind": "count"}], "where": {}}, "where: expected a list of at most 16"),
    (where({"column": "t", "op": "=", "value": 1, "x": 2}), "where[0]: unknown field 'x'"),
    (where({"column": "t", "op": "="}), "where[0].value: required"),
    (where({"column": "t", "op": "~", "value": 1}), "where[0].op: expected one of =, !=, <"),
    (where({"column": "1t", "op": "=", "value": 1}), "where[0].column: expected a column name"),
    (where({"column": "t", "op": "<", "value": "a"}), "where[0].value: < compares numbers"),
    (where({"column": "t", "op": "in", "value": 1}), "where[0].value: in takes a list of 1"),
    (where({"column": "t", "op": "in", "value": []}), "where[0].value: in takes a list of 1"),
    (where({"column": "t", "op": "in", "value": [1, "a"]}), "the values of in must all be"),
    (where({"column": "t", "op": "=", "value": None}), "where[0].value: expected a finite"),
    (where({"column": "t", "op": "=", "value": [1]}), "where[0].value: expected a finite"),
    (where({"column": "t", "op": "=", "value": "x" * 201}), "at most 200 characters"),
]


@pytest.mark.parametrize(("doc", "expected"), ERRORS)
def test_errors_name_the_json_path(doc: Any, expected: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(doc)
    assert str(caught.value).startswith(expected) or expected in str(caught.value)


SNEAKY: list[dict[str, Any]] = [
    one({"kind": SECRET_VALUE, "column": "t"}),
    one({"kind": "sum", "column": f"{SECRET_VALUE} or 1=1"}),
    one({"kind": "quantile", "column": "t", "q": SECRET_VALUE}),
    one({"kind": "histogram", "column": "t", "bins": SECRET_VALUE}),
    one({"kind": "count", f"{SECRET_VALUE}-x": 1}),
    {"aggregates": [{"kind": "count"}], "group_by": [SECRET_VALUE]},
    {"aggregates": [{"kind": "count"}], "x" * 200: 1},
    where({"column": "t", "op": SECRET_VALUE, "value": 1}),
    where({"column": "t", "op": "<", "value": SECRET_VALUE}),
    where({"column": "t", "op": "=", "value": [SECRET_VALUE]}),
    where({"column": "t", "op": "in", "value": [1, SECRET_VALUE]}),
    where({"column": "t", "op": "=", "value": SECRET_VALUE * 20}),
]


def test_where_parses_to_filters_and_back() -> None:
    doc = where(
        {"column": "line", "op": "in", "value": ["L1", "L2"]},
        {"column": "t", "op": "<", "value": 90},
        {"column": "ok", "op": "!=", "value": False},
    )
    query = parse_query(doc)
    assert query.where == (
        Filter("line", FilterOp.IN, ("L1", "L2")),
        Filter("t", FilterOp.LT, 90),
        Filter("ok", FilterOp.NE, False),
    )
    assert query.columns_used() == {"line", "t", "ok"}
    assert query_document(query) == doc
    assert parse_query(where()).where == ()


@pytest.mark.parametrize("doc", SNEAKY)
def test_errors_never_echo_submitted_values(doc: dict[str, Any]) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(doc)
    message = str(caught.value)
    assert SECRET_VALUE not in message and "x" * 65 not in message
    assert len(message) < 200


def test_schema_file_is_in_sync() -> None:
    assert (DOCS / "query.schema.json").read_text() == schema_text()
    schema = query_json_schema()
    kinds = [
        item["properties"]["kind"]["const"]
        for item in schema["properties"]["aggregates"]["items"]["oneOf"]
    ]
    assert sorted(kinds) == sorted(str(kind) for kind in AggregateKind)
    assert json.loads(schema_text()) == schema


def test_documented_examples_parse() -> None:
    text = (DOCS / "query-examples.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 5
    queries = [parse_query(json.loads(block)) for block in blocks]
    kinds = {a.kind for q in queries for a in q.aggregates}
    assert kinds == set(AggregateKind)
