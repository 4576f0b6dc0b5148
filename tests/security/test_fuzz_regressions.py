"""What fuzzing the API (reliability/fuzz.py) found, kept as tests on a real Veil.

Each test is one finding: a 5xx, a response that broke the OpenAPI schema, or text that
could hide or reorder what officers read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.api.errors import ERROR_SCHEMA
from sandbox.client import ApiError, VeilClient
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION
from sandbox.server.app import create_app
from tests.sandbox.conftest import GRANTED, PURPOSE, World

ERRORS = {"401", "403", "404", "409", "413", "422", "429", "503"}


def bearer(client: VeilClient) -> dict[str, str]:
    return {"authorization": str(client._http.headers["authorization"])}


def is_error_body(body: Any) -> bool:
    """The body as ERROR_SCHEMA describes it (checked by hand: no schema library needed)."""
    fields = ERROR_SCHEMA["properties"]
    return (
        isinstance(body, dict)
        and isinstance(body.get("detail"), str)
        and set(body) <= set(fields)
        and all(isinstance(p, dict) for p in body.get("problems", []))
    )


def test_every_operation_documents_the_errors_it_can_answer(tmp_path: Path) -> None:
    """Found: every 401/403/404/409 was undocumented, and the documented 422 was FastAPI's
    ``{"detail": [...]}`` where Veil sends ``{"detail": "...", "problems": [...]}``."""
    spec = create_app(Settings(data_dir=tmp_path)).openapi()  # the schema needs no running core
    assert spec["components"]["schemas"]["Error"] == ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    assert len(operations) > 30
    for path, method, op in operations:
        documented = {code for code, r in op["responses"].items() if r.get("content") == error}
        expected = {"429", "503"} if path == "/v1/health" else ERRORS
        assert documented == expected, (method, path, documented)


def test_error_bodies_are_as_documented(world: World) -> None:
    url, provider = world.url, bearer(world.provider)
    answers = [
        httpx.get(f"{url}/v1/me"),  # 401
        httpx.get(f"{url}/v1/audit/verify", headers=provider),  # 403
        httpx.get(f"{url}/v1/jobs/job_nothing", headers=provider),  # 404
        httpx.post(f"{url}/v1/jobs", json={"tier": "x"}, headers=provider),  # 422 (schema)
        httpx.post(  # 403 with reasons and a job id
            f"{url}/v1/jobs",
            json={
                "dataset_id": world.dataset_id,
                "purpose": "marketing",
                "tier": 3,
                "epsilon": 0.1,
                "query": {"aggregates": [{"kind": "count"}]},
            },
            headers=provider,
        ),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 422, 403]
    for answer in answers:
        assert is_error_body(answer.json()), answer.text


def test_a_json_body_that_cannot_be_decoded_is_a_422_saying_why(world: World) -> None:
    """Found: FastAPI answered an undocumented 400 "There was an error parsing the body"
    for a body not in UTF-8, or nested deeper than Python's JSON decoder recurses."""
    auth = bearer(world.provider) | {"content-type": "application/json"}
    for body, why in [
        (b'{"purpose": "\xff\xfe"}', "it must be encoded in UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ]:
        response = httpx.post(f"{world.url}/v1/jobs", content=body, headers=auth)
        assert response.status_code == 422, response.text
        assert why in response.json()["detail"]
        assert is_error_body(response.json())
    assert httpx.get(f"{world.url}/v1/me", headers=auth).status_code == 200


def test_integer_bounds_past_64_bits_are_refused_at_declaration(world: World) -> None:
    """Found: a declaration took integer bounds of ±1e20; the DP library then refused every
    sum and mean at preview, while submitted jobs were queued (and their budget spent)."""
    column = {"name": "count_x", "type": "integer", "class": "internal"}
    for lower, upper in [(-1e20, 1e20), (0, 1e19), (-(2**70), 0)]:
        response = httpx.post(
            f"{world.url}/v1/datasets",
            json={"name": "wide", "columns": [column | {"lower": lower, "upper": upper}]},
            headers=bearer(world.acme),
        )
        assert response.status_code == 422, response.text
        assert response.json()["problems"] == [
            {
                "column": "count_x",
                "row": None,
                "expected": "bounds from -9223372036854775807 to 9223372036854775807",
            }
        ]
    accepted = world.acme.create_dataset("wide", [column | {"lower": -(2**62), "upper": 2**62}])
    assert accepted["name"] == "wide"


# --- Found, to be fixed in modules owned elsewhere -------------------------------------------

OUT_OF_RANGE_SINCE = "0001-01-01T00:00:00+14:00"  # before year 1 in UTC
OUT_OF_RANGE_UNTIL = "9999-12-31T23:59:59-14:00"  # after year 9999 in UTC


def test_audit_and_receipt_queries_out_of_range_are_422(world: World) -> None:
    auth = bearer(world.operator)
    for path, params in [
        ("/v1/audit/events", {"before_seq": str(10**20)}),
        ("/v1/audit/events", {"before_seq": str(-(10**20))}),
        ("/v1/audit/events", {"since": OUT_OF_RANGE_SINCE}),
        ("/v1/audit/attention", {"since": OUT_OF_RANGE_SINCE}),
        ("/v1/audit/keys", {"since": OUT_OF_RANGE_SINCE}),
        ("/v1/audit/export", {"since": OUT_OF_RANGE_SINCE}),
        ("/v1/audit/export", {"until": OUT_OF_RANGE_UNTIL}),
        ("/v1/audit/events", {"until": OUT_OF_RANGE_UNTIL}),
        ("/v1/receipts", {"provider_id": world.provider_id, "until": "0001-01-01T00:00:00Z"}),
    ]:
        response = httpx.get(f"{world.url}{path}", params=params, headers=auth)
        assert response.status_code == 422, (path, params, response.status_code)


def test_grant_times_out_of_range_are_422(world: World) -> None:
    auth = bearer(world.acme)
    grant = {
        "provider_id": world.provider_id,
        "dataset_ids": [world.dataset_id],
        "columns": GRANTED,
        "tiers": [3],
        "purposes": [PURPOSE],
        "valid_until": OUT_OF_RANGE_UNTIL,
        "epsilon": 1.0,
    }
    created = httpx.post(f"{world.url}/v1/grants", json=grant, headers=auth)
    changed = httpx.patch(
        f"{world.url}/v1/grants/{world.grant_id}",
        json={"reason": "extend", "valid_until": OUT_OF_RANGE_UNTIL},
        headers=auth,
    )
    assert (created.status_code, changed.status_code) == (422, 422), (created.text, changed.text)


def test_grant_purposes_with_control_characters_are_refused(world: World) -> None:
    for purpose in ["line\nbreak", "nul\x00byte", "right-to-left\u202eoverride"]:
        with pytest.raises(ApiError) as refused:
            world.acme.create_grant(
                world.provider_id,
                [world.dataset_id],
                GRANTED,
                [3],
                [purpose],
                datetime.now(UTC) + timedelta(days=1),
                1.0,
            )
        assert refused.value.status == 422


def test_the_demo_declaration_is_still_accepted(world: World) -> None:
    """The dataset-name rule refuses control characters and path separators only."""
    created = world.acme.create_dataset("production-log (copy) 2026", DECLARATION["columns"])
    assert created["name"] == "production-log (copy) 2026"
