"""Why an SQL construct is outside the subset (``analytics.sql``), and what to write instead.

One table from sqlglot node types to a reason and a stable code.  A reason names the
construct by its SQL keyword or by sqlglot's name for it, never by text of the query,
except a function name shaped like a column name.
"""

from __future__ import annotations

from typing import Final

from sqlglot import exp

from analytics.column_names import is_column_name
from i18n import Msg

#: SQL aggregate functions and the query document's kind for each.
AGGREGATES: Final[dict[type[exp.Expr], str]] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "mean",
    exp.Median: "median",
    exp.Quantile: "quantile",
}
HOW_TO: Final = Msg(
    "use COUNT(*), COUNT(col), SUM(col), AVG(col), MEDIAN(col), QUANTILE(col, q) or "
    "PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)"
)

_JOIN: Final = Msg(
    "JOIN is refused in a free query: a query reads one dataset. Only approved "
    "collaboration templates may join datasets; ask the enterprises for one"
)
_BY_TYPE: Final[tuple[tuple[tuple[type[exp.Expr], ...], Msg, str], ...]] = (
    ((exp.Join, exp.Lateral), _JOIN, "sql_join"),
    (
        (exp.Subquery, exp.Select, exp.Exists),
        Msg("subqueries are not supported: write one SELECT on one dataset"),
        "sql_subquery",
    ),
    (
        (exp.With, exp.CTE),
        Msg("WITH (common table expressions) is not supported: write one SELECT"),
        "sql_unsupported",
    ),
    (
        (exp.Union, exp.Intersect, exp.Except),
        Msg("UNION, INTERSECT and EXCEPT are not supported: submit one query per SELECT"),
        "sql_unsupported",
    ),
    (
        (exp.Window, exp.WindowSpec),
        Msg("window functions (OVER) are not supported: use GROUP BY"),
        "sql_unsupported",
    ),
    (
        (exp.Having,),
        Msg(
            "HAVING is not supported: statistics are released with noise and cannot be "
            "filtered; filter rows with WHERE instead"
        ),
        "sql_unsupported",
    ),
    (
        (exp.Order, exp.Ordered),
        Msg(
            "ORDER BY is not needed: groups come back in key order (sort the result "
            "yourself); it is used only in PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)"
        ),
        "sql_unsupported",
    ),
    (
        (exp.Limit, exp.Offset, exp.Fetch),
        Msg(
            "LIMIT and OFFSET are not supported: a release holds every group (or the "
            "DP-selected ones); keep the rows you need from the result"
        ),
        "sql_unsupported",
    ),
    (
        (exp.Alias, exp.TableAlias),
        Msg(
            "aliases (AS) are not supported: results are labelled by their statistic, "
            "e.g. mean(temperature_c), and a dataset is named by its id or name"
        ),
        "sql_unsupported",
    ),
    (
        (exp.Distinct,),
        Msg("DISTINCT is not supported (nor COUNT(DISTINCT col)): counts count rows"),
        "sql_unsupported",
    ),
    (
        (exp.Or, exp.Xor),
        Msg(
            "OR is not supported in WHERE: filters are joined with AND; for several "
            "values of one column use IN (...)"
        ),
        "sql_unsupported",
    ),
    (
        (exp.Not,),
        Msg("NOT is not supported: use != or the opposite comparison"),
        "sql_unsupported",
    ),
    (
        (exp.Is, exp.Null),
        Msg(
            "NULL and IS NULL are not supported: a row whose value is null passes no "
            "filter on that column"
        ),
        "sql_unsupported",
    ),
    (
        (exp.Like, exp.ILike, exp.RegexpLike, exp.SimilarTo),
        Msg("pattern matching (LIKE) is not supported: compare with = or IN (...)"),
        "sql_unsupported",
    ),
    (
        (exp.Cast, exp.TryCast),
        Msg("CAST is not supported: columns are compared with their declared types"),
        "sql_unsupported",
    ),
    (
        (exp.Case, exp.If),
        Msg("CASE is not supported: filter rows with WHERE, or group by a column"),
        "sql_unsupported",
    ),
    (
        (exp.Placeholder, exp.Parameter),
        Msg("parameters (?, :name) are not supported: write the constant itself"),
        "sql_unsupported",
    ),
    (
        (exp.PercentileDisc,),
        Msg("PERCENTILE_DISC is not supported: use PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)"),
        "sql_unsupported",
    ),
    (
        (exp.Rollup, exp.Cube, exp.GroupingSets),
        Msg("ROLLUP, CUBE and GROUPING SETS are not supported: GROUP BY columns only"),
        "sql_unsupported",
    ),
    (
        (exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Create, exp.Alter, exp.Command),
        Msg("only a SELECT statement is accepted: queries never change data"),
        "sql_not_select",
    ),
)


def refusal(node: exp.Expr, root: exp.Expr) -> tuple[Msg, str]:
    """Why ``node`` is refused (in a query whose statement is ``root``), and its code."""
    if node is root and not isinstance(node, exp.Select | exp.Union | exp.Intersect | exp.Except):
        return Msg(
            "only a SELECT statement is accepted: queries never change data"
        ), "sql_not_select"
    if isinstance(node, exp.Star):
        return (
            Msg("SELECT * is not supported: name the statistics to release; {how}", how=HOW_TO),
            "sql_unsupported",
        )
    for types, message, code in _BY_TYPE:
        if isinstance(node, types):
            return message, code
    if isinstance(node, exp.Binary | exp.Unary) and not isinstance(node, exp.Predicate):
        return (
            Msg("arithmetic is not supported: aggregate and compare columns as they are"),
            "sql_unsupported",
        )
    if isinstance(node, exp.Func):
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        shown = name.upper() if is_column_name(name) and len(name) <= 32 else Msg("this function")
        return (
            Msg("function {name} is not supported; {how}", name=shown, how=HOW_TO),
            "sql_function",
        )
    return (
        Msg(
            "{construct} is not part of the SQL subset (docs/sql.md lists it)",
            construct=type(node).__name__,
        ),
        "sql_unsupported",
    )
