"""SQL for private queries: a small, documented subset, translated into the query document.

An analyst may write a tier-3 query as SQL instead of JSON::

    SELECT shift, COUNT(*), AVG(temperature_c),
           PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cycle_time_s)
    FROM line_sensors
    WHERE line IN ('L1', 'L2') AND temperature_c < 90
    GROUP BY shift

:func:`translate_sql` parses it with sqlglot's generic dialect, checks every node of the
tree against an allow-list, and builds the JSON query document (``analytics.query_document``)
that says the same; that document is then parsed by ``parse_query`` like any other, so SQL
and JSON make the same :class:`~analytics.schema.PrivateQuery` and pass the same checks.
Anything outside the subset (``docs/sql.md``) is refused with a :class:`SqlError` naming the
clause and the line and column, saying what to write instead; a message never repeats a
literal of the query (only column names, which the catalog shows anyway).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import sqlglot
from sqlglot import exp

from analytics.column_names import column_name_problem, normalise
from analytics.dp_catalog import QueryError
from analytics.query_document import parse_query
from analytics.schema import PrivateQuery
from analytics.sql_refusals import AGGREGATES, HOW_TO, refusal
from i18n import Msg

#: The longest SQL text read (characters): a query of the subset is far shorter.
MAX_SQL_CHARS: Final = 10_000

#: Every node type the subset may contain; any other is refused (``sql_refusals``).
_ALLOWED: Final = (
    exp.Select,
    exp.From,
    exp.Table,
    exp.Identifier,
    exp.Column,
    exp.Star,
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Median,
    exp.Quantile,
    exp.WithinGroup,
    exp.PercentileCont,
    exp.Order,
    exp.Ordered,
    exp.Literal,
    exp.Neg,
    exp.Boolean,
    exp.Where,
    exp.And,
    exp.Paren,
    exp.EQ,
    exp.NEQ,
    exp.LT,
    exp.LTE,
    exp.GT,
    exp.GTE,
    exp.In,
    exp.Between,
    exp.Group,
)
#: Comparison nodes, their operator, and the operator seen from the other side.
_OPS: Final[dict[type[exp.Expr], tuple[str, str]]] = {
    exp.EQ: ("=", "="),
    exp.NEQ: ("!=", "!="),
    exp.LT: ("<", ">"),
    exp.LTE: ("<=", ">="),
    exp.GT: (">", "<"),
    exp.GTE: (">=", "<="),
}
_NUMBER: Final = re.compile(r"^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$|^\.[0-9]+([eE][+-]?[0-9]+)?$")
_INTEGER: Final = re.compile(r"^[0-9]+$")
#: Refused before any other construct, in this order: the query is of another kind.
_FIRST: Final[tuple[tuple[type[exp.Expr], ...], ...]] = (
    (exp.Join, exp.Lateral),
    (exp.With, exp.CTE, exp.Union, exp.Intersect, exp.Except),
    (exp.Subquery, exp.Select),
)


class SqlError(QueryError):
    """SQL outside the subset: ``code`` names the kind of refusal, the message says where
    (clause, line and column) and how to fix it, never quoting a literal of the query."""

    def __init__(self, message: str, code: str = "sql_unsupported") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SqlTranslation:
    """What an SQL query says: the dataset it names and the equivalent query document."""

    dataset: str  # FROM: a dataset's id or name, as written (NFC)
    document: dict[str, Any]  # the JSON query document
    query: PrivateQuery  # parse_query(document)


def translate_sql(text: object) -> SqlTranslation:
    """The query document of an SQL query of the subset; :class:`SqlError` otherwise.

    Never raises anything else, whatever ``text`` is.
    """
    root = _parse(text)
    assert isinstance(text, str)
    _check_nodes(root, text)
    if not isinstance(root, exp.Select):  # pragma: no cover - _check_nodes refused it
        raise SqlError(Msg("only a SELECT statement is accepted"))
    return _Translator(text).select(root)


def _parse(text: object) -> exp.Expr:
    if not isinstance(text, str) or not text.strip():
        raise SqlError(Msg("expected one SELECT statement, as text"), "sql_syntax")
    if len(text) > MAX_SQL_CHARS:
        raise SqlError(
            Msg("the SQL is longer than {limit} characters", limit=MAX_SQL_CHARS), "sql_syntax"
        )
    try:
        statements = sqlglot.parse(text, read=None)
    except sqlglot.errors.ParseError as error:
        first = error.errors[0] if error.errors else {}
        line, column = first.get("line"), first.get("col")
        if isinstance(line, int) and isinstance(column, int):
            raise SqlError(
                Msg(
                    "SQL syntax error near line {line}, column {column}: check the statement "
                    "there (docs/sql.md shows the accepted forms)",
                    line=line,
                    column=column,
                ),
                "sql_syntax",
            ) from None
        raise SqlError(_unreadable(), "sql_syntax") from None
    except Exception:  # a third-party parser on untrusted text: one answer, whatever it raised
        # sqlglot's own messages quote the text (literals included): never shown.
        raise SqlError(_unreadable(), "sql_syntax") from None
    present = [s for s in statements if s is not None]
    if len(present) != 1:
        raise SqlError(
            Msg("expected exactly one SELECT statement (no ';' between several)"), "sql_syntax"
        )
    return present[0]


def _unreadable() -> Msg:
    return Msg("the SQL could not be read: check for an unclosed quote, comment or bracket")


def _position(node: exp.Expr, text: str) -> tuple[int, int] | None:
    """The line and column (from 1) where ``node`` starts, if sqlglot kept its place."""
    starts = [
        n.meta["start"]
        for n in node.walk()
        if isinstance(n.meta.get("start"), int) and isinstance(n, exp.Expr)
    ]
    if not starts:
        return None
    start = min(starts)
    line = text.count("\n", 0, start) + 1
    return line, start - (text.rfind("\n", 0, start) + 1) + 1


def _at(node: exp.Expr, text: str) -> Msg:
    found = _position(node, text)
    if found is None:
        return Msg("in the statement")
    return Msg("at line {line}, column {column}", line=found[0], column=found[1])


_CLAUSES: Final = {
    "expressions": "SELECT",
    "distinct": "SELECT",
    "from_": "FROM",
    "joins": "FROM",
    "laterals": "FROM",
    "where": "WHERE",
    "group": "GROUP BY",
    "having": "HAVING",
    "order": "ORDER BY",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "with_": "WITH",
}


def _clause(node: exp.Expr) -> str:
    """The clause a node sits in, as SQL names it (the statement's keyword for itself)."""
    chain = [node, *_parents(node)]
    if len(chain) == 1:
        return node.key.upper()  # sqlglot's name of the statement: SELECT, UNION, DELETE
    return _CLAUSES.get(chain[-2].arg_key or "", "SELECT")


def _parents(node: exp.Expr) -> list[exp.Expr]:
    found = []
    while node.parent is not None:
        node = node.parent
        found.append(node)
    return found


def refuse(node: exp.Expr, text: str, problem: Msg, code: str) -> SqlError:
    """The refusal of ``node``: its clause, where it starts, and ``problem``."""
    return SqlError(
        Msg(
            "{clause} {at}: {problem}",
            clause=_clause(node),
            at=_at(node, text),
            problem=problem,
        ),
        code,
    )


def _check_nodes(root: exp.Expr, text: str) -> None:
    """Refuse the first node (in reading order) that the subset does not allow; a
    statement other than SELECT, a JOIN or a subquery first, wherever it is (fixing
    anything else would not make the query acceptable)."""
    bad = []
    for node in root.walk():
        if not _allowed(node, root):
            rank = next((i for i, kinds in enumerate(_FIRST) if isinstance(node, kinds)), None)
            first = len(_FIRST) if rank is None and node is not root else (rank or 0)
            bad.append(((first, *(_position(node, text) or (math.inf, math.inf))), node))
    if bad:
        node = min(bad, key=lambda pair: pair[0])[1]
        problem, code = refusal(node, root)
        raise refuse(node, text, problem, code)


def _allowed(node: exp.Expr, root: exp.Expr) -> bool:
    if not isinstance(node, _ALLOWED):
        return False
    if isinstance(node, exp.Select):
        return node is root
    if isinstance(node, exp.Star):
        return isinstance(node.parent, exp.Count)
    if isinstance(node, exp.Order | exp.Ordered):  # only in WITHIN GROUP (ORDER BY col)
        return any(isinstance(p, exp.WithinGroup) for p in _parents(node))
    if isinstance(node, exp.PercentileCont):
        return isinstance(node.parent, exp.WithinGroup)
    return True


# ---------------------------------------------------------------- translation


@dataclass(frozen=True)
class _Translator:
    text: str

    def fail(self, node: exp.Expr, problem: Msg, code: str = "sql_unsupported") -> SqlError:
        return refuse(node, self.text, problem, code)

    def select(self, root: exp.Select) -> SqlTranslation:
        for key, value in root.args.items():
            if value and key not in ("expressions", "from_", "where", "group"):
                raise self.fail(
                    root, Msg("this form of SELECT is not supported; {how}", how=HOW_TO)
                )
        source = root.args.get("from_")
        if not isinstance(source, exp.From):
            raise self.fail(root, Msg("FROM is missing: name the dataset, by its id or name"))
        dataset = self.table(source)
        group = root.args.get("group")
        group_by = self.group_by(group) if isinstance(group, exp.Group) else []
        aggregates = []
        for item in root.expressions:
            if isinstance(item, exp.Column):
                name = self.column(item)
                if name not in group_by:
                    raise self.fail(
                        item,
                        Msg(
                            "column {name} is neither aggregated nor in GROUP BY: aggregate "
                            "it (e.g. AVG({name})) or add it to GROUP BY",
                            name=name,
                        ),
                    )
                continue
            aggregates.append(self.aggregate(item))
        if not aggregates:
            raise self.fail(root, Msg("SELECT needs at least one aggregate: {how}", how=HOW_TO))
        document: dict[str, Any] = {"aggregates": aggregates}
        if group_by:
            document["group_by"] = group_by
        where = root.args.get("where")
        if isinstance(where, exp.Where):
            document["where"] = [f for term in _conjuncts(where.this) for f in self.filter(term)]
        try:
            query = parse_query(document)
        except QueryError as error:  # e.g. more aggregates than allowed
            raise SqlError(
                Msg("the SQL translates to a query that is refused: {problem}", problem=error),
                "sql_invalid",
            ) from None
        return SqlTranslation(dataset, document, query)

    def table(self, source: exp.From) -> str:
        table = source.this
        if not isinstance(table, exp.Table):  # pragma: no cover - _check_nodes refused it
            raise self.fail(source, Msg("FROM names one dataset, by its id or name"))
        if any(table.args.get(k) for k in table.args if k != "this"):
            raise self.fail(
                table,
                Msg("FROM names one dataset, by its id or name, without a prefix or alias"),
            )
        name = table.this
        if not isinstance(name, exp.Identifier) or not isinstance(name.this, str):
            raise self.fail(table, Msg("FROM names one dataset, by its id or name"))
        if not 1 <= len(name.this) <= 200 or not name.this.isprintable():
            raise self.fail(
                table, Msg("FROM: a dataset id or name of 1 to 200 printable characters")
            )
        return normalise(name.this)

    def column(self, node: exp.Expr) -> str:
        if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
            raise self.fail(node, Msg("expected a column name here; {how}", how=HOW_TO))
        if node.args.get("table") or node.args.get("db") or node.args.get("catalog"):
            raise self.fail(node, Msg("name the column alone, without a table prefix"))
        name = node.this.this
        problem = column_name_problem(name)
        if problem is not None:
            raise self.fail(node, Msg("expected {column_help}", column_help=problem))
        return normalise(name)

    def group_by(self, group: exp.Group) -> list[str]:
        names = []
        for item in group.expressions:
            if isinstance(item, exp.Literal):
                raise self.fail(item, Msg("GROUP BY takes column names, not positions"))
            names.append(self.column(item))
        return names

    def aggregate(self, node: exp.Expr) -> dict[str, Any]:
        kind = AGGREGATES.get(type(node))
        if kind is not None:
            argument = node.this
            if kind == "count" and isinstance(argument, exp.Star):
                return {"kind": "count"}
            item: dict[str, Any] = {"kind": kind, "column": self.argument(node, argument)}
            if isinstance(node, exp.Quantile):
                item["q"] = self.level(node.args.get("quantile"), node)
            return item
        if isinstance(node, exp.WithinGroup):
            return self.percentile(node)
        raise self.fail(
            node, Msg("each SELECT item is an aggregate or a GROUP BY column; {how}", how=HOW_TO)
        )

    def argument(self, node: exp.Expr, argument: Any) -> str:
        if isinstance(argument, exp.Column):
            return self.column(argument)
        if isinstance(argument, exp.Expr) and type(argument) in AGGREGATES:
            raise self.fail(argument, Msg("aggregates cannot be nested: aggregate a column"))
        raise self.fail(node, Msg("an aggregate takes one column, as it is"))

    def percentile(self, node: exp.WithinGroup) -> dict[str, Any]:
        function, order = node.this, node.expression
        ordered = order.expressions if isinstance(order, exp.Order) else []
        if not isinstance(function, exp.PercentileCont) or len(ordered) != 1:
            raise self.fail(
                node, Msg("write a quantile as PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY column)")
            )
        if ordered[0].args.get("desc"):
            raise self.fail(
                ordered[0],
                Msg("ORDER BY ... DESC in a percentile: order ascending and use 1 - q instead"),
            )
        column = self.argument(node, ordered[0].this)
        return {"kind": "quantile", "column": column, "q": self.level(function.this, node)}

    def level(self, value: Any, node: exp.Expr) -> float:
        number = self.literal(value, node) if isinstance(value, exp.Expr) else None
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number < 1:
            raise self.fail(node, Msg("a quantile's level q is a number strictly between 0 and 1"))
        return float(number)

    def literal(self, node: exp.Expr, where: exp.Expr) -> str | int | float | bool:
        """A constant: a quoted text, a number (maybe negative), TRUE or FALSE."""
        if isinstance(node, exp.Paren):
            return self.literal(node.this, where)
        if isinstance(node, exp.Boolean):
            return bool(node.this)
        negative = isinstance(node, exp.Neg)
        if negative:
            node = node.this
        if isinstance(node, exp.Literal) and isinstance(node.this, str):
            if node.is_string and not negative:
                return node.this
            if not node.is_string and _NUMBER.match(node.this):
                value = int(node.this) if _INTEGER.match(node.this) else float(node.this)
                if math.isfinite(value) and abs(value) < 1e300:
                    return -value if negative else value
        raise self.fail(
            where, Msg("expected a constant here: a number, a quoted 'text', TRUE or FALSE")
        )

    def filter(self, term: exp.Expr) -> list[dict[str, Any]]:
        if isinstance(term, exp.In):
            if term.args.get("query") or term.args.get("unnest") or term.args.get("field"):
                raise self.fail(term, Msg("IN takes a list of constants: IN (1, 2, 3)"))
            values = [self.literal(v, term) for v in term.expressions]
            return [{"column": self.column(term.this), "op": "in", "value": values}]
        if isinstance(term, exp.Between):
            column = self.column(term.this)
            low = self.literal(term.args["low"], term)
            high = self.literal(term.args["high"], term)
            return [
                {"column": column, "op": ">=", "value": low},
                {"column": column, "op": "<=", "value": high},
            ]
        ops = _OPS.get(type(term))
        if ops is None or not isinstance(term, exp.Binary):
            raise self.fail(
                term,
                Msg("WHERE takes comparisons of a column with a constant, joined with AND"),
            )
        left, right = term.this, term.expression
        if isinstance(left, exp.Column) and not isinstance(right, exp.Column):
            return [{"column": self.column(left), "op": ops[0], "value": self.literal(right, term)}]
        if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
            return [{"column": self.column(right), "op": ops[1], "value": self.literal(left, term)}]
        raise self.fail(term, Msg("compare one column with a constant (not two columns)"))


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    """The terms of ``a AND (b AND c)``, in order."""
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


# ---------------------------------------------------------------- JOIN in approved templates

#: The joined table's name once the JOIN is removed (never shown: FROM is rewritten).
JOINED: Final = "joined"


def translate_join_sql(
    text: object, tables: dict[str, tuple[str, frozenset[str]]]
) -> SqlTranslation:
    """The query document of an analysis template's SQL (``analytics.pair_spec``).

    ``tables`` names the template's two tables: ``name -> (join key, its columns)``.  The
    statement must read ``FROM a JOIN b ON a.key = b.key`` (an inner join of the two tables
    on their declared keys, an alias allowed for each) and is otherwise the subset of
    :func:`translate_sql`, over the joined table: every column is one of a table's
    (prefixed by its table or alias, or alone).  ``JOIN`` is refused everywhere else.
    """
    root = _parse(text)
    assert isinstance(text, str)
    if not isinstance(root, exp.Select):
        raise SqlError(Msg("only a SELECT statement is accepted"))
    joins = root.args.get("joins") or []
    source = root.args.get("from_")
    if len(joins) != 1 or not isinstance(source, exp.From):
        raise refuse(root, text, Msg("an analysis template reads FROM one side's table JOIN "
                                     "the other's ON their keys"), "sql_unsupported")  # fmt: skip
    join = joins[0]
    aliases = {}
    for table in (source.this, join.this):
        if not isinstance(table, exp.Table) or table.name not in tables:
            names = ", ".join(sorted(tables))
            problem = Msg("name the template's two tables: {names}", names=names)
            raise refuse(table, text, problem, "sql_unsupported")
        aliases[table.alias_or_name] = table.name
        aliases[table.name] = table.name
    if len(set(aliases.values())) != 2 or any(
        join.args.get(k) for k in ("kind", "side", "using", "method")
    ):
        raise refuse(join, text, Msg("JOIN the two tables once, as an inner join ON their "
                                     "keys"), "sql_unsupported")  # fmt: skip
    on = join.args.get("on")
    sides = (
        [on.this, on.expression]
        if isinstance(on, exp.EQ) and all(isinstance(c, exp.Column) for c in on.iter_expressions())
        else []
    )
    named = {aliases.get(c.table): c.name for c in sides}
    if (
        len(sides) != 2
        or set(named) != set(tables)
        or any(named[name] != key for name, (key, _) in tables.items())
    ):
        raise refuse(join, text, Msg("ON must equate the two tables' join keys "
                                     "(a.key = b.key)"), "sql_unsupported")  # fmt: skip
    owner = {column: name for name, (_, columns) in tables.items() for column in columns}
    join.pop()
    for column in list(root.find_all(exp.Column)):
        prefix = column.table
        if prefix:
            if aliases.get(prefix) is None or owner.get(column.name) != aliases[prefix]:
                raise refuse(column, text, Msg("the table {table} has no column {name} in "
                                               "the template", table=prefix,
                                               name=column.name), "sql_unsupported")  # fmt: skip
            column.set("table", None)
    source.set("this", exp.Table(this=exp.to_identifier(JOINED)))
    _check_nodes(root, text)
    translation = _Translator(text).select(root)
    return SqlTranslation(JOINED, translation.document, translation.query)
