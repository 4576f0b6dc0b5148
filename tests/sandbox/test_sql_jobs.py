"""Tier-3 queries in SQL over the API: the same job as JSON, both kept; refusals are 422 with
a code in both languages; a filter needs a granted, non-secret column; never a 500."""

# ruff: noqa: S608 - the SQL here is translated by Veil, never run by a database
from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.client import ApiError
from tests.sandbox.conftest import PURPOSE, World
from tests.sandbox.test_api_errors import bearer, both

SQL = (
    'SELECT shift, COUNT(*), AVG(temperature_c) FROM "production-log-2026" '
    "WHERE machine IN ('press-01', 'lathe-01') AND cycle_time_s < 60 GROUP BY shift"
)
DOCUMENT = {
    "aggregates": [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
    "group_by": ["shift"],
    "where": [
        {"column": "machine", "op": "in", "value": ["press-01", "lathe-01"]},
        {"column": "cycle_time_s", "op": "<", "value": 60},
    ],
}


def _post(world: World, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{world.url}{path}", headers=bearer(world.provider), json=body)


def _sql_job(sql: str, **extra: Any) -> dict[str, Any]:
    return {"purpose": PURPOSE, "tier": 3, "epsilon": 0.1, "sql": sql} | extra


def test_sql_becomes_the_json_job_and_the_job_keeps_both(world: World) -> None:
    explained = world.provider.translate_sql(SQL)
    assert explained == {"dataset_id": world.dataset_id, "query": DOCUMENT}
    job = world.provider.submit_sql(SQL, PURPOSE, epsilon=0.1)
    assert job["dataset_id"] == world.dataset_id
    assert job["sql"] == SQL and job["query"] == DOCUMENT
    as_json = world.provider.submit_query(world.dataset_id, PURPOSE, DOCUMENT, epsilon=0.1)
    assert as_json["query"] == job["query"] and as_json["sql"] is None
    by_id = SQL.replace('"production-log-2026"', world.dataset_id)
    assert world.provider.translate_sql(by_id)["dataset_id"] == world.dataset_id
    final = world.provider.wait_for_job(job["id"])
    assert final["status"] == "released", final
    assert world.acme.get_job(job["id"])["sql"] == SQL  # the data owner sees the SQL too


def test_a_preview_in_sql_spends_nothing(world: World) -> None:
    answer = world.provider.preview_sql(SQL, PURPOSE, epsilon=0.1)
    assert answer["allowed"] and answer["epsilon"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ('SELECT COUNT(*) FROM "production-log-2026" a JOIN b ON a.k = b.k', "sql_join"),
        ('SELECT * FROM "production-log-2026"', "sql_unsupported"),
        ('SELECT COUNT(*) FROM "production-log-2026" ORDER BY 1', "sql_unsupported"),
        ("SELECT COUNT(* FROM x", "sql_syntax"),
        ("SELECT MAX(t) FROM x", "sql_function"),
    ],
)
def test_refused_sql_is_a_422_in_both_languages(world: World, sql: str, code: str) -> None:
    for path in ("/v1/jobs", "/v1/queries/translate"):
        body = _sql_job(sql) if path == "/v1/jobs" else {"sql": sql}
        en, zh = both("POST", f"{world.url}{path}", headers=bearer(world.provider), json=body)
        assert zh["message"].startswith("SQL\uff1a")  # the Chinese colon
        assert en["status"] == 422 and en["code"] == code, en
        assert en["message"].startswith("sql: ")


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("recipe_p1 > 0.5", "secret: no job may use it, not even as a filter"),
        ("vibration_mm_s < 3", "column 'vibration_mm_s' is not in your grant"),
    ],
)
def test_a_filter_on_a_column_not_usable_is_denied(world: World, where: str, reason: str) -> None:
    sql = f'SELECT COUNT(*) FROM "production-log-2026" WHERE {where}'
    response = _post(world, "/v1/jobs", _sql_job(sql))
    assert response.status_code == 403, response.text
    assert reason in response.json()["message"]
    column = where.split()[0]
    document = {
        "aggregates": [{"kind": "count"}],
        "where": [{"column": column, "op": ">", "value": 0}],
    }
    as_json = _post(
        world,
        "/v1/jobs",
        _sql_job(sql) | {"sql": None, "query": document, "dataset_id": world.dataset_id},
    )
    assert as_json.status_code == 403 and reason in as_json.json()["message"]
    budget = world.provider.get_job(response.json()["job_id"])
    assert budget["status"] == "denied"


def test_tier_2_tables_take_no_filter(world: World) -> None:
    body = {
        "dataset_id": world.dataset_id,
        "purpose": PURPOSE,
        "tier": 2,
        "query": {**DOCUMENT, "aggregates": [{"kind": "count"}]},
    }
    response = _post(world, "/v1/jobs", body)
    assert response.status_code == 422 and response.json()["code"] == "filter_not_allowed"
    sql_tier_2 = _post(world, "/v1/jobs", _sql_job(SQL, tier=2, epsilon=0))
    assert sql_tier_2.status_code == 422 and sql_tier_2.json()["code"] == "sql_tier"


def test_query_or_sql_exactly_one_and_from_must_agree(world: World) -> None:
    both_given = _post(world, "/v1/jobs", _sql_job(SQL, query=DOCUMENT))
    assert both_given.status_code == 422
    neither = _post(world, "/v1/jobs", {"purpose": PURPOSE, "dataset_id": world.dataset_id})
    assert neither.status_code == 422
    other = _post(world, "/v1/jobs", _sql_job(SQL, dataset_id=world.globex_dataset_id))
    assert other.status_code == 422 and other.json()["code"] == "sql_dataset_mismatch"


def test_from_an_unknown_or_another_tenants_dataset_is_not_found(world: World) -> None:
    for name in ("no-such-dataset", "globex-log", world.globex_dataset_id):
        sql = f'SELECT COUNT(*) FROM "{name}"'
        for path, body in (("/v1/queries/translate", {"sql": sql}), ("/v1/jobs", _sql_job(sql))):
            response = _post(world, path, body)
            assert response.status_code == 404, (name, response.text)
    with pytest.raises(ApiError):
        world.other_provider.translate_sql(SQL)  # no grant: the name says nothing


NASTY = [
    "",
    " ",
    "\x00",
    "SELECT",
    "SELECT COUNT(*) FROM " + "(" * 2000,
    "SELECT COUNT(*) FROM t WHERE x = '" + "\\" * 50,
    "SELECT COUNT(*) FROM t WHERE x = 1e999999",
    "SELECT COUNT(*) FROM t WHERE x IN (" + ",".join(["1"] * 5000) + ")",
    'SELECT COUNT(*) FROM "\u202e"',
    "SELECT COUNT(*) FROM t; SELECT COUNT(*) FROM t",
    "/* unclosed",
    "SELECT COUNT(*) FROM t WHERE x = $$y$$",
    "SELECT QUANTILE(x, 0.5, 7) FROM t",
    "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY x, y) FROM t",
    "x" * 10_001,
]


@pytest.mark.parametrize("sql", NASTY)
def test_any_sql_text_is_answered_without_a_500(world: World, sql: str) -> None:
    for path, body in (("/v1/queries/translate", {"sql": sql}), ("/v1/jobs", _sql_job(sql))):
        response = _post(world, path, body)
        assert response.status_code in (404, 422), (path, response.status_code, response.text)
