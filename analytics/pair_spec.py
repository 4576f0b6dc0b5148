"""A supply-chain analysis between two enterprises: its template, and the joined table.

A provider writes a **template** naming the two enterprises (the *compute* side, whose
node's sandbox runs the joined computation, and the *other* side), the join key on each
side (say ``part_no``), the columns each side contributes (with the bounds or categories
the DP engine needs, declared, never learned from data), and what is released: a DP query
document (``analytics.query_document``) or SQL with ``JOIN`` (``analytics.sql``) over the
joined table.  Both enterprises approve that exact template (pinned by its SHA-256).

**The joined table**: each side's rows are reduced to one row per key (numeric columns
summed, string columns take their smallest value), the two are joined on the key (only the
keys both sides hold), and the key is dropped.  One row is one key (one part): the DP
guarantee protects any one part's values, on both sides.  Numeric columns are
``confidential`` (DP only), string columns with categories are ``public`` (group keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import polars as pl

from analytics.column_names import is_column_name
from analytics.dp_catalog import QueryError, validate_query
from analytics.query_document import parse_query
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivateQuery
from i18n import Msg

ROLES: Final = ("compute", "other")
#: The most keys a side may bring to the intersection unless the template says fewer: each
#: key costs about 0.4 ms of CPU in PSI (``keys.psi``), and the messages grow with it.
MAX_KEYS: Final = 100_000
MAX_COLUMNS: Final = 16
#: A release needs at least this many joined rows unless both approvals ask for more.
MIN_ROWS: Final = 10
_TYPES: Final = {"int": ColumnType.INTEGER, "float": ColumnType.FLOAT, "string": ColumnType.STRING}


@dataclass(frozen=True)
class Side:
    role: str  # "compute" or "other"
    enterprise: str  # the enterprise's principal id
    name: str  # how the template's SQL names this side's table
    key: str  # the join key, as the template names it
    columns: tuple[ColumnSpec, ...]


@dataclass(frozen=True)
class AnalysisSpec:
    compute: Side
    other: Side
    query: PrivateQuery
    document: dict[str, Any]  # the query document (SQL translated)
    epsilon: float
    delta: float
    min_rows: int
    max_keys: int

    def side(self, role: str) -> Side:
        return self.compute if role == "compute" else self.other

    def side_of(self, enterprise_id: str) -> Side | None:
        for side in (self.compute, self.other):
            if side.enterprise == enterprise_id:
                return side
        return None

    @property
    def schema(self) -> DatasetSchema:
        """The joined table's schema (the key is not in it)."""
        return DatasetSchema(self.compute.columns + self.other.columns)


def _number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise QueryError(
            Msg("{path}: expected a number from {low} to {high}", path=path, low=low, high=high)
        )
    return float(value)


def _column(item: Any, path: str) -> ColumnSpec:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise QueryError(Msg('{path}: expected {{"name": ..., "type": ...}}', path=path))
    name, kind = item["name"], item.get("type")
    if not is_column_name(name):
        raise QueryError(Msg("{path}.name is not a column name", path=path))
    if kind not in _TYPES:
        raise QueryError(Msg("{path}.type must be int, float or string", path=path))
    allowed = {"name", "type", "categories"} if kind == "string" else {"name", "type", "lower",
                                                                        "upper"}  # fmt: skip
    if set(item) - allowed:
        raise QueryError(Msg("{path}: unknown field; expected only {expected}", path=path,
                    expected=", ".join(sorted(allowed))))  # fmt: skip
    if kind == "string":
        categories = item.get("categories")
        if (
            not isinstance(categories, list)
            or not 1 <= len(categories) <= 1000
            or not all(isinstance(c, str) and 0 < len(c) <= 100 for c in categories)
            or len(set(categories)) != len(categories)
        ):
            raise QueryError(Msg("{path}.categories: list 1 to 1000 distinct public values "
                                 "(the group "
                        "keys; never learned from the data)", path=path))  # fmt: skip
        return ColumnSpec(name, ColumnType.STRING, ColumnClass.PUBLIC,
                          categories=tuple(categories), nullable=True)  # fmt: skip
    lower = _number(item.get("lower"), f"{path}.lower", -1e15, 1e15)
    upper = _number(item.get("upper"), f"{path}.upper", -1e15, 1e15)
    if not lower < upper:
        raise QueryError(Msg("{path}: lower must be below upper", path=path))
    return ColumnSpec(name, _TYPES[kind], ColumnClass.CONFIDENTIAL, lower=lower, upper=upper)


def _side(item: Any, role: str) -> Side:
    path = f"sides.{role}"
    if not isinstance(item, dict):
        raise QueryError(Msg("{path}: expected an object", path=path))
    allowed = {"enterprise", "name", "key", "columns"}
    if set(item) != allowed:
        raise QueryError(Msg("{path}: expected exactly the fields {expected}", path=path,
                    expected=", ".join(sorted(allowed))))  # fmt: skip
    enterprise = item["enterprise"]
    if not isinstance(enterprise, str) or not 1 <= len(enterprise) <= 40:
        raise QueryError(Msg("{path}.enterprise: the enterprise's id", path=path))
    for field in ("name", "key"):
        if not isinstance(item[field], str) or not is_column_name(item[field]):
            raise QueryError(Msg("{path}.{field} is not a name", path=path, field=field))
    columns = item["columns"]
    if not isinstance(columns, list) or not 1 <= len(columns) <= MAX_COLUMNS:
        raise QueryError(Msg("{path}.columns: list 1 to {n} columns", path=path, n=MAX_COLUMNS))
    specs = tuple(_column(c, f"{path}.columns[{i}]") for i, c in enumerate(columns))
    return Side(role, enterprise, item["name"], item["key"], specs)


def parse_analysis(doc: Any) -> AnalysisSpec:
    """The checked template; QueryError naming the field (never a value) otherwise."""
    if not isinstance(doc, dict):
        raise QueryError(Msg("the analysis template must be a JSON object"))
    allowed = {"sides", "query", "sql", "epsilon", "delta", "min_rows", "max_keys"}
    unknown = set(doc) - allowed
    if unknown:
        raise QueryError(Msg("the template has an unknown field; expected only {expected}",
                    expected=", ".join(sorted(allowed))))  # fmt: skip
    sides = doc.get("sides")
    if not isinstance(sides, dict) or set(sides) != set(ROLES):
        raise QueryError(Msg('sides: expected {{"compute": ..., "other": ...}}'))
    compute, other = _side(sides["compute"], "compute"), _side(sides["other"], "other")
    if compute.enterprise == other.enterprise:
        raise QueryError(Msg("the two sides must be two enterprises"))
    if compute.name == other.name:
        raise QueryError(Msg("the two sides need two different table names"))
    names = [c.name for c in compute.columns + other.columns]
    if len(set(names)) != len(names):
        raise QueryError(Msg("a column name is used twice: each column of the joined table "
                             "needs its "
                    "own name"))  # fmt: skip
    if {compute.key, other.key} & set(names):
        raise QueryError(Msg("the join key is not a column of the joined table: list only the "
                    "columns each side contributes"))  # fmt: skip
    epsilon = _number(doc.get("epsilon"), "epsilon", 0.01, 10)
    delta = _number(doc.get("delta", 0.0), "delta", 0, 1e-5)
    min_rows = int(_number(doc.get("min_rows", MIN_ROWS), "min_rows", MIN_ROWS, 1e6))
    max_keys = int(_number(doc.get("max_keys", MAX_KEYS), "max_keys", 1, MAX_KEYS))
    if ("query" in doc) == ("sql" in doc):
        raise QueryError(Msg("give what is released as either 'query' (a query document) or 'sql'"))
    if "sql" in doc:
        from analytics.sql import translate_join_sql

        tables = {s.name: (s.key, frozenset(c.name for c in s.columns)) for s in (compute, other)}
        document = translate_join_sql(doc["sql"], tables).document
    else:
        document = doc["query"]
    query = parse_query(document)
    spec = AnalysisSpec(compute, other, query, document, epsilon, delta, min_rows, max_keys)
    validate_query(spec.schema, query)
    return spec


# ---------------------------------------------------------------- the joined table

#: The key's column in a side's reduced frame (no template column may be named so).
KEY: Final = "__key"


def reduce_side(frame: pl.DataFrame, side: Side) -> pl.DataFrame:
    """One row per key of a side's frame, already renamed to the template's names (its key
    column is ``side.key``): numeric columns summed, string ones their smallest value; keys
    as normalised text (``keys.psi.normalise`` is the same NFC-and-strip)."""
    import unicodedata

    aggregations = []
    for column in side.columns:
        value = pl.col(column.name)
        aggregations.append(value.min() if column.type == ColumnType.STRING else value.sum())
    keyed = frame.with_columns(
        pl.col(side.key)
        .cast(pl.String)
        .map_elements(lambda k: unicodedata.normalize("NFC", k.strip()), return_dtype=pl.String)
        .alias(KEY)
    ).filter(pl.col(KEY).is_not_null() & (pl.col(KEY) != ""))
    return keyed.group_by(KEY).agg(aggregations).sort(KEY)


def joined(compute: pl.DataFrame, other: pl.DataFrame, spec: AnalysisSpec) -> pl.DataFrame:
    """The joined table (key dropped) of the two reduced sides, with the schema's columns
    in order and types."""
    table = compute.join(other, on=KEY, how="inner")
    columns = []
    for column in spec.schema.columns:
        dtype = {ColumnType.INTEGER: pl.Int64, ColumnType.FLOAT: pl.Float64}.get(
            column.type, pl.String
        )
        columns.append(pl.col(column.name).cast(dtype))
    return table.select(columns)
