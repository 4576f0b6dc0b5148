"""The SQL kind's settings, checked without a server: what is accepted, what is refused, and
that no refusal repeats a value."""

from __future__ import annotations

import pytest

from sandbox.sources import kinds, sql

TABLE = {"table": "mes.readings", "incremental": "id"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mes@db.plant:5432/mes",
        "postgresql+psycopg://mes@127.0.0.1/mes",
        "mysql://mes@10.0.0.5/mes",
        "mariadb://mes@10.0.0.5:3307/mes",
        "mssql+pyodbc://mes@plant-dsn",
    ],
)
def test_postgresql_mysql_mariadb_and_sql_server_urls_are_accepted(url: str) -> None:
    assert sql.check_config({"url": url} | TABLE) == []
    assert kinds.KINDS["sql"] is sql


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"url": "postgresql://mes:Hunter2-secret@db/mes"} | TABLE, "url: without its password"),
        ({"url": "oracle://mes@db/x"} | TABLE, "url: a PostgreSQL, MySQL/MariaDB or SQL Server"),
        ({"url": "not a url"} | TABLE, "url: an SQLAlchemy URL"),
        ({"url": "mysql://m@h/d", "incremental": "id"}, "table or query: exactly one"),
        (
            {"url": "mysql://m@h/d", "table": "t; DROP TABLE x", "incremental": "id"},
            "table: a table",
        ),
        (
            {"url": "mysql://m@h/d", "query": "DELETE FROM t", "incremental": "id"},
            "query: one SELECT",
        ),
        (
            {"url": "mysql://m@h/d", "table": "t", "incremental": "id) OR (1=1"},
            "incremental: the name",
        ),
        (
            {"url": "mysql://m@h/d", "table": "t", "incremental": "id", "batch_rows": 0},
            "batch_rows",
        ),
        (
            {"url": "mysql://m@h/d", "table": "t", "incremental": "id", "password": "x"},
            "unknown setting 'password'",
        ),
    ],
)
def test_unusable_settings_are_refused_by_name_never_by_value(
    config: dict[str, object], problem: str
) -> None:
    problems = sql.check_config(config)
    assert any(p.startswith(problem) for p in problems), problems
    assert "Hunter2-secret" not in repr(problems)


def test_only_a_password_is_a_credential() -> None:
    assert sql.check_secrets({"password": "x"}) == []
    assert sql.check_secrets({"token": "x"}) == ["unknown credential 'token'"]
