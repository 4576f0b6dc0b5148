"""An SQL source: any database SQLAlchemy reaches (PostgreSQL, MySQL/MariaDB, SQL Server).

The declaration's settings (``config``):

- ``url``: an SQLAlchemy URL without its password, e.g.
  ``postgresql://mes@db.plant:5432/mes``, ``mysql://mes@10.0.0.5/mes`` (MariaDB too),
  ``mssql+pyodbc://mes@dsn``. PostgreSQL is read with psycopg, MySQL/MariaDB with PyMySQL
  unless the URL names another driver;
- ``table`` (optionally ``schema.table``) or ``query`` (one ``SELECT``);
- ``incremental``: the column whose values only grow (an id, an insert time): each read
  returns the rows whose value is above the cursor, in its order; the cursor is the
  largest value read, as text;
- ``batch_rows`` (default 10000): at most this many rows per read, except that rows sharing
  the last value are never split across reads (they would be skipped).

The credentials (``secrets``): ``password``, put into the URL only in memory.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError

from sandbox.sources.base import Batch, SourceError

DEFAULT_BATCH_ROWS = 10_000
MAX_BATCH_ROWS = 1_000_000
_SETTINGS = frozenset({"url", "table", "query", "incremental", "batch_rows"})
_SECRETS = frozenset({"password"})
_DIALECTS = frozenset({"postgresql", "mysql", "mariadb", "mssql", "sqlite"})
#: The driver each dialect is read with when the URL names none (both installed with Veil).
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql",
                    "mariadb": "mariadb+pymysql"}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,127}$")
_CONNECT_TIMEOUT_S = 10


def check_config(config: Mapping[str, Any]) -> list[str]:
    """The settings' problems, each naming the setting (never its value)."""
    problems = [f"unknown setting {name!r}" for name in sorted(set(config) - _SETTINGS)]
    url = _url(config.get("url"))
    if url is None:
        problems.append("url: an SQLAlchemy URL, e.g. postgresql://user@host:5432/database")
    else:
        if url.get_backend_name() not in _DIALECTS:
            problems.append("url: a PostgreSQL, MySQL/MariaDB or SQL Server database")
        if url.password is not None:
            problems.append("url: without its password (give the password as a credential)")
    table, query = config.get("table"), config.get("query")
    if (table is None) == (query is None):
        problems.append("table or query: exactly one of them")
    elif table is not None and not (
        isinstance(table, str) and all(_NAME.match(p) for p in table.split(".", 1))
    ):
        problems.append("table: a table name, or schema.table (letters, digits, _)")
    elif query is not None and not (
        isinstance(query, str) and query.lstrip().lower().startswith(("select", "with"))
    ):
        problems.append("query: one SELECT statement")
    incremental = config.get("incremental")
    if not (isinstance(incremental, str) and _NAME.match(incremental)):
        problems.append("incremental: the name of the column whose values only grow")
    batch = config.get("batch_rows", DEFAULT_BATCH_ROWS)
    if not (isinstance(batch, int) and not isinstance(batch, bool)) or not (
        1 <= batch <= MAX_BATCH_ROWS
    ):
        problems.append(f"batch_rows: a whole number from 1 to {MAX_BATCH_ROWS}")
    return problems


def check_secrets(secrets: Mapping[str, str]) -> list[str]:
    """The credentials' problems: only ``password``, as text."""
    problems = [f"unknown credential {name!r}" for name in sorted(set(secrets) - _SECRETS)]
    if not all(isinstance(v, str) for v in secrets.values()):
        problems.append("credentials: text values")
    return problems


def _url(text: object) -> URL | None:
    if not isinstance(text, str):
        return None
    try:
        return make_url(text)
    except (ArgumentError, ValueError):
        return None


def continuous(config: Mapping[str, Any]) -> bool:
    """Never: a table's rows stay in the database, and any copy reads them from the cursor."""
    return False


def open_source(config: Mapping[str, Any], secrets: Mapping[str, str]) -> SqlSource:
    """An SQL source on checked settings; connects on its first read."""
    url = make_url(config["url"])
    url = url.set(drivername=_DEFAULT_DRIVERS.get(url.drivername, url.drivername))
    if "password" in secrets:
        url = url.set(password=secrets["password"])
    return SqlSource(
        url,
        table=config.get("table"),
        query=config.get("query"),
        incremental=config["incremental"],
        batch_rows=int(config.get("batch_rows", DEFAULT_BATCH_ROWS)),
    )


class SqlSource:
    """Reads new rows of one table or query, ``batch_rows`` at a time, in incremental order."""

    def __init__(
        self, url: URL, *, table: str | None, query: str | None, incremental: str, batch_rows: int
    ) -> None:
        self._url = url
        self._table_name, self._query = table, query
        self._incremental = incremental
        self._batch_rows = batch_rows
        self._engine: Engine | None = None
        self._table: sa.Table | None = None
        self._closed = False

    def read(self, cursor: str | None) -> Batch:
        if self._closed:
            raise SourceError("the source was closed")
        try:
            return self._read(cursor)
        except SourceError:
            raise
        except NoSuchModuleError:
            raise SourceError(
                f"url: no database driver for {self._url.drivername} is installed on this core"
            ) from None
        except NoSuchTableError:
            raise SourceError("table: the database has no such table") from None
        except SQLAlchemyError as exc:
            # The driver's own text may quote a statement's parameters (the cursor): only its
            # class and SQLSTATE-like code are shown.
            raise SourceError(_describe(exc)) from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"the database could not be read ({type(exc).__name__})") from None

    def _read(self, cursor: str | None) -> Batch:
        base, column = self._selectable()
        if cursor is not None:
            base = base.where(column > _typed(cursor, column))
        with self._connected().connect() as conn:
            result = conn.execute(base.order_by(column).limit(self._batch_rows))
            names = list(result.keys())
            if self._incremental not in names:
                raise SourceError("incremental: the query gives no such column")
            rows = [tuple(r) for r in result]
            if len(rows) == self._batch_rows:
                # Never split the rows that share the last value: take them all now.
                position = names.index(self._incremental)
                last = rows[-1][position]
                rows = [r for r in rows if r[position] != last]
                rows += [tuple(r) for r in conn.execute(base.where(column == last))]
        frame = _frame(names, rows)
        if not rows:
            return Batch(frame, cursor)
        largest = rows[-1][names.index(self._incremental)]
        return Batch(frame, _text(largest))

    def _connected(self) -> Engine:
        if self._engine is None:
            args: dict[str, Any] = {}
            backend = self._url.get_backend_name()
            if backend in ("postgresql", "mysql", "mariadb"):
                args["connect_timeout"] = _CONNECT_TIMEOUT_S
            self._engine = sa.create_engine(
                self._url, connect_args=args, pool_pre_ping=True, pool_size=1, max_overflow=0
            )
        return self._engine

    def _selectable(self) -> tuple[sa.Select[Any], sa.ColumnElement[Any]]:
        """Everything the table or query gives, and its incremental column."""
        if self._table_name is None:
            assert self._query is not None
            # The query is the enterprise's own, on its own database, run as it declared it.
            source = sa.text(f"({self._query.rstrip().rstrip(';')}) AS veil_source")
            return sa.select(sa.text("*")).select_from(source), sa.column(self._incremental)
        if self._table is None:
            schema, _, name = self._table_name.rpartition(".")
            self._table = sa.Table(
                name, sa.MetaData(), schema=schema or None, autoload_with=self._connected()
            )
        if self._incremental not in self._table.c:
            raise SourceError("incremental: the table has no such column")
        return sa.select(self._table), self._table.c[self._incremental]

    def close(self) -> None:
        self._closed = True
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _typed(cursor: str, column: sa.ColumnElement[Any]) -> object:
    """The cursor as a value of the column's type (a query's columns: guessed from the text)."""
    try:
        python_type: type | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    if python_type is None:
        if re.fullmatch(r"-?\d+", cursor):
            return int(cursor)
        try:
            return dt.datetime.fromisoformat(cursor)
        except ValueError:
            return cursor
    if python_type is dt.datetime:
        return dt.datetime.fromisoformat(cursor)
    if python_type is dt.date:
        return dt.date.fromisoformat(cursor)
    if python_type in (int, float, decimal.Decimal):
        return python_type(cursor)
    return cursor


def _text(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _frame(names: list[str], rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    series = []
    for name, values in zip(names, columns, strict=True):
        if any(isinstance(v, decimal.Decimal) for v in values):
            values = tuple(None if v is None else float(v) for v in values)
        series.append(pl.Series(name, values, strict=False))
    return pl.DataFrame(series)


def _describe(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    code = getattr(original, "sqlstate", None) or (
        original.args[0] if original is not None and original.args else None
    )
    kind = type(original or exc).__name__
    if isinstance(code, int | str) and len(str(code)) <= 8:
        return f"the database refused or could not be reached ({kind} {code})"
    return f"the database refused or could not be reached ({kind})"
