"""Supply-chain analysis templates (``analytics.pair_spec``) and SQL with JOIN in them
(``analytics.sql.translate_join_sql``): what is accepted, what is refused and why, and the
joined table the sandbox computes over."""

from __future__ import annotations

import copy
from typing import Any

import polars as pl
import pytest

from analytics.dp_catalog import QueryError
from analytics.pair_spec import KEY, joined, parse_analysis, reduce_side
from analytics.sql import SqlError, translate_join_sql, translate_sql
from sandbox.demo.supply import template

A, B = "ent_" + "a" * 32, "ent_" + "b" * 32


def spec(**changes: Any) -> dict[str, Any]:
    return {**template(A, B), **changes}


def test_the_demo_template_translates_its_sql_to_the_query_document() -> None:
    parsed = parse_analysis(spec())
    assert parsed.document == {
        "aggregates": [{"kind": "count"}, {"kind": "sum", "column": "planned_qty"},
                       {"kind": "sum", "column": "on_hand"}],
        "group_by": ["family"],
    }  # fmt: skip
    assert parsed.schema.names == ("family", "planned_qty", "on_hand")
    assert parsed.side_of(A) is parsed.compute and parsed.side_of("ent_x") is None
    assert (
        parse_analysis(_without(spec(), "sql") | {"query": parsed.document}).query == parsed.query
    )


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def _changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(spec())
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ("not an object", "JSON object"),
        (spec(extra=1), "unknown field"),
        (_changed(("sides", "other", "enterprise"), A), "two enterprises"),
        (_changed(("sides", "other", "name"), "plan"), "two different table names"),
        (_changed(("sides", "other", "columns"), [{"name": "family", "type": "float",
                                                   "lower": 0, "upper": 1}]), "used twice"),
        (_changed(("sides", "other", "columns"), [{"name": "part_no", "type": "float",
                                                   "lower": 0, "upper": 1}]), "join key"),
        (_changed(("sides", "compute", "columns"), [{"name": "x", "type": "float",
                                                     "lower": 5, "upper": 1}]), "below upper"),
        (_changed(("sides", "compute", "columns"), [{"name": "x", "type": "string"}]),
         "categories"),
        (_changed(("sides", "compute", "columns"), [{"name": "x", "type": "blob"}]), "type"),
        (spec(epsilon=50), "epsilon"),
        (spec(min_rows=2), "min_rows"),
        (spec(max_keys=10**7), "max_keys"),
        (spec(query={"aggregates": [{"kind": "count"}]}), "either 'query'"),
        (spec(sql="SELECT COUNT(*) FROM plan"), "JOIN"),
        (spec(sql="SELECT SUM(plan.on_hand) FROM plan JOIN stock ON plan.part_no = "
                  "stock.part_no"), "no column"),
        (spec(sql="SELECT SUM(planned_qty) FROM plan JOIN stock ON plan.part_no = "
                  "stock.part_no GROUP BY part_no"), "part_no"),
    ],
)  # fmt: skip
def test_a_bad_template_is_refused_saying_what(doc: Any, says: str) -> None:
    with pytest.raises(QueryError, match=says):
        parse_analysis(doc)


TABLES = {"plan": ("part_no", frozenset({"family", "planned_qty"})),
          "stock": ("part_no", frozenset({"on_hand"}))}  # fmt: skip


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM plan LEFT JOIN stock ON plan.part_no = stock.part_no",
        "SELECT COUNT(*) FROM plan CROSS JOIN stock",
        "SELECT COUNT(*) FROM plan JOIN stock USING (part_no)",
        "SELECT COUNT(*) FROM plan JOIN stock ON plan.family = stock.part_no",
        "SELECT COUNT(*) FROM plan JOIN stock ON plan.part_no = stock.part_no "
        "JOIN stock AS s2 ON plan.part_no = s2.part_no",
        "SELECT COUNT(*) FROM plan JOIN other ON plan.part_no = other.part_no",
        "SELECT COUNT(*) FROM plan JOIN plan AS p2 ON plan.part_no = p2.part_no",
        "SELECT COUNT(*) FROM plan JOIN (SELECT * FROM stock) AS s ON plan.part_no = s.part_no",
        "SELECT plan.part_no FROM plan JOIN stock ON plan.part_no = stock.part_no",
    ],
)
def test_only_the_declared_inner_join_is_accepted(sql: str) -> None:
    with pytest.raises(SqlError):
        translate_join_sql(sql, TABLES)


def test_an_alias_is_accepted_and_join_stays_refused_outside_templates() -> None:
    sql = ("SELECT p.family, AVG(s.on_hand) FROM plan AS p JOIN stock AS s "
           "ON s.part_no = p.part_no WHERE p.family IN ('axle') GROUP BY p.family")  # fmt: skip
    document = translate_join_sql(sql, TABLES).document
    assert document["group_by"] == ["family"]
    assert document["aggregates"] == [{"kind": "mean", "column": "on_hand"}]
    with pytest.raises(SqlError, match="JOIN"):
        translate_sql(sql)


def test_the_joined_table_has_one_row_per_common_key() -> None:
    parsed = parse_analysis(spec())
    plan = pl.DataFrame({"part_no": [" P-1", "P-1", "P-2", "P-3", None],
                         "family": ["axle", "axle", "brake", "gearbox", "axle"],
                         "planned_qty": [1.0, 2.0, 5.0, 7.0, 9.0]})  # fmt: skip
    stock = pl.DataFrame({"part_no": ["P-1", "P-3", "P-9"], "on_hand": [10.0, 30.0, 90.0]})
    mine, theirs = reduce_side(plan, parsed.compute), reduce_side(stock, parsed.other)
    assert mine[KEY].to_list() == ["P-1", "P-2", "P-3"]  # stripped, merged, no empty key
    table = joined(mine, theirs, parsed)
    assert table.columns == ["family", "planned_qty", "on_hand"]
    assert sorted(table.rows()) == [("axle", 3.0, 10.0), ("gearbox", 7.0, 30.0)]
