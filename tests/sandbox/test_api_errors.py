# ruff: noqa: RUF001 - the Chinese messages use full-width punctuation
"""API errors: a stable ``code``, and a ``message`` in the caller's language.

Each request is sent twice, with ``Accept-Language: en`` and ``zh-CN``: the status and
the code are the same, the message is English in one and Chinese in the other, with every
placeholder filled. Also: truthful refusals (a missing tier is named, an unknown column
gets a suggestion among usable names only) and validation problems as sentences.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.client import VeilClient
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import PURPOSE, World

CHINESE = re.compile(r"[\u4e00-\u9fff]")
BRACES = re.compile(r"\{[a-z_0-9]*\}")


def bearer(client: VeilClient) -> dict[str, str]:
    return {"authorization": str(client._http.headers["authorization"])}


def both(method: str, url: str, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The English and the Chinese answer to the same request (same status and code)."""
    answers = {}
    headers = kwargs.pop("headers", {})
    for language in ("en", "zh-CN"):
        response = httpx.request(
            method, url, headers=headers | {"accept-language": language}, **kwargs
        )
        assert response.headers["content-language"] == language
        answers[language] = (response.status_code, response.json())
    (status_en, en), (status_zh, zh) = answers["en"], answers["zh-CN"]
    assert status_en == status_zh
    assert en["code"] == zh["code"]
    for body, chinese in ((en, False), (zh, True)):
        assert body["message"] == body["detail"]
        assert bool(CHINESE.search(body["message"])) is chinese, body
        assert not BRACES.search(body["message"]), body
    return en | {"status": status_en}, zh | {"status": status_zh}


def job(dataset_id: str, aggregates: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "purpose": PURPOSE,
        "tier": 3,
        "epsilon": 0.1,
        "query": {"aggregates": aggregates},
    } | extra


def test_a_dataset_without_any_grant_is_not_found_in_both_languages(world: World) -> None:
    auth = bearer(world.provider)
    for dataset_id in (world.globex_dataset_id, "ds_does_not_exist"):
        en, zh = both("GET", f"{world.url}/v1/datasets/{dataset_id}/mock", headers=auth)
        assert en["status"] == 404 and en["code"] == "not_found"
        assert en["message"] == f"dataset '{dataset_id}' not found"
        assert zh["message"] == f"未找到数据集“{dataset_id}”"


def test_a_granted_dataset_without_tier_1_names_the_missing_tier(world: World) -> None:
    en, zh = both(
        "GET", f"{world.url}/v1/datasets/{world.dataset_id}/mock", headers=bearer(world.provider)
    )
    assert en["status"] == 403 and en["code"] == "tier_not_granted"
    assert en["message"] == "tier 1 (mock data) is not in your grant"
    assert "第 1 级（模拟数据）" in zh["message"]


def test_a_job_on_an_ungranted_tier_is_denied_with_the_same_words(world: World) -> None:
    body = job(world.dataset_id, [{"kind": "count"}], tier=2, epsilon=0.0)
    en, zh = both("POST", f"{world.url}/v1/jobs", headers=bearer(world.provider), json=body)
    assert en["status"] == 403 and en["code"] == "denied"
    assert "tier 2 (aggregate tables) is not in your grant" in en["reasons"]
    assert "第 2 级（聚合表）不在你的授权范围内" in zh["reasons"]
    # The job is stored with the English reason (receipts sign it); answers translate it.
    stored = httpx.get(
        f"{world.url}/v1/jobs/{en['job_id']}",
        headers=bearer(world.provider) | {"accept-language": "zh-CN"},
    ).json()
    assert stored["reasons"] == ["第 2 级（聚合表）不在你的授权范围内"]


def test_an_unknown_column_is_named_with_a_usable_suggestion(world: World) -> None:
    auth = bearer(world.provider)
    body = job(world.dataset_id, [{"kind": "mean", "column": "temperatur_c"}])
    en, zh = both("POST", f"{world.url}/v1/jobs", headers=auth, json=body)
    assert en["status"] == 422 and en["code"] == "unknown_column"
    assert en["message"] == "unknown column 'temperatur_c' (did you mean 'temperature_c'?)"
    assert zh["message"] == "未知的列“temperatur_c”（你是否想用“temperature_c”？）"
    # Close to a secret column (recipe_p1) and an ungranted one (vibration_mm_s): neither
    # is suggested, as neither may be used.
    for column in ("recipe_p2", "vibration_mm"):
        body = job(world.dataset_id, [{"kind": "mean", "column": column}])
        en, _ = both("POST", f"{world.url}/v1/jobs", headers=auth, json=body)
        assert en["message"] == f"unknown column '{column}'", en
    # A known column outside the grant stays "not in your grant".
    body = job(world.dataset_id, [{"kind": "mean", "column": "vibration_mm_s"}])
    en, zh = both("POST", f"{world.url}/v1/jobs", headers=auth, json=body)
    assert en["status"] == 403
    assert en["reasons"] == ["column 'vibration_mm_s' is not in your grant"]
    assert zh["reasons"] == ["列“vibration_mm_s”不在你的授权范围内"]
    assert zh["message"] == "已拒绝：列“vibration_mm_s”不在你的授权范围内"


def test_an_unknown_column_on_an_ungranted_dataset_says_nothing_of_its_columns(
    world: World,
) -> None:
    auth = bearer(world.provider)
    answers = []
    for dataset_id in (world.globex_dataset_id, "ds_does_not_exist"):
        body = job(dataset_id, [{"kind": "mean", "column": "temperatur_c"}])
        en, _ = both("POST", f"{world.url}/v1/jobs", headers=auth, json=body)
        answers.append((en["status"], en["code"], en["reasons"]))
    assert answers[0] == answers[1] == (403, "denied", ["no grant gives you this dataset"])


def test_validation_problems_are_sentences_without_the_input(world: World) -> None:
    body = {
        "provider_id": world.provider_id,
        "dataset_ids": [world.dataset_id],
        "columns": ["machine"],
        "tiers": [3],
        "purposes": [PURPOSE],
        "valid_until": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "epsilon": -7.25,
        "surprise": "planted-value",
    }
    en, zh = both("POST", f"{world.url}/v1/grants", headers=bearer(world.acme), json=body)
    assert en["status"] == 422 and en["code"] == "validation_error"
    by_field = {p["field"]: p for p in en["problems"]}
    assert by_field["epsilon"]["message"] == "epsilon: must be at least 0"
    assert by_field["surprise"]["expected"] == "is not a field of this request: remove it"
    assert "epsilon: must be at least 0" in en["message"]
    zh_by_field = {p["field"]: p for p in zh["problems"]}
    assert zh_by_field["epsilon"]["message"] == "epsilon：不能小于 0"
    for answer in (en, zh):
        text = str(answer)
        assert "-7.25" not in text and "planted-value" not in text


@pytest.mark.parametrize(
    ("body", "field", "english"),
    [
        ({"ttl_days": 0}, "ttl_days", "must be at least 1"),
        ({"ttl_days": 99999}, "ttl_days", "must be at most 3650"),
        ({"ttl_days": "many"}, "ttl_days", "must be a whole number"),
    ],
)
def test_each_pydantic_problem_type_has_a_sentence(
    world: World, body: dict[str, Any], field: str, english: str
) -> None:
    url = f"{world.url}/v1/principals/{world.provider_id}/tokens"
    en, zh = both("POST", url, headers=bearer(world.operator), json=body)
    assert en["status"] == 422
    assert en["problems"][0]["message"] == f"{field}: {english}"
    assert zh["problems"][0]["message"].startswith(f"{field}：")


def test_broken_json_and_unknown_endpoints_have_codes(world: World) -> None:
    auth = bearer(world.acme) | {"content-type": "application/json"}
    en, _ = both("POST", f"{world.url}/v1/grants", headers=auth, content=b"{not json")
    assert en["status"] == 422 and en["code"] == "validation_error"
    en, _ = both("GET", f"{world.url}/v1/no-such-thing", headers=auth)
    assert en["status"] == 404 and en["code"] == "no_such_endpoint"


def test_unauthenticated_in_both_languages(world: World) -> None:
    en, zh = both("GET", f"{world.url}/v1/me")
    assert en["status"] == 401 and en["code"] == "unauthenticated"
    assert "Authorization: Bearer" in en["message"] and "令牌" in zh["message"]
    en, zh = both("GET", f"{world.url}/v1/me", headers={"authorization": "Bearer nope"})
    assert en["status"] == 401 and en["code"] == "unauthenticated"


def test_conflict_in_both_languages(world: World) -> None:
    world.acme.revoke_grant(world.grant_id)
    url = f"{world.url}/v1/grants/{world.grant_id}/revoke"
    en, zh = both("POST", url, headers=bearer(world.acme))
    assert en["status"] == 409 and en["code"] == "conflict"
    assert en["message"] == "this grant is already revoked"
    assert zh["message"] == "此授权已被撤销"


def test_the_request_guard_answers_in_the_callers_language(world: World, veil: Veil) -> None:
    settings = veil.settings.model_copy(
        update={"max_request_bytes": 1000, "rate_limit_per_s": 0.01, "rate_limit_burst": 2}
    )
    from sandbox.server.thread import ApiThread

    with ApiThread(settings, veil) as url:
        auth = bearer(world.acme) | {"content-type": "application/json"}
        en, zh = both("POST", f"{url}/v1/grants", headers=auth, content=b" " * 5000)
        assert en["status"] == 413 and en["code"] == "body_too_large"
        assert "VEIL_MAX_REQUEST_BYTES" in zh["message"]
        assert zh["problems"][0]["expected"] == "最多 1000 字节（VEIL_MAX_REQUEST_BYTES）"
        en, zh = both("GET", f"{url}/v1/me", headers=auth)
        assert en["status"] == 429 and en["code"] == "rate_limited"
        assert "VEIL_RATE_LIMIT_PER_S" in zh["message"]
