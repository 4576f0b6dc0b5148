"""Property level authorization (OWASP API3): no field of any body sets what its sender may not.

- Mass assignment: every JSON body of every write route, sent by a caller the route
  accepts, with one field added that the body does not declare (an owner, a status, a
  budget, a tier...): 422, and nothing stored changed.  Nested objects (a dataset's
  columns and privacy unit, a job's query document) refuse extra fields too.
- A provider's own fields: every value a provider may put in the bodies it may send
  (tier, budget, purpose, dataset, query) leaves its grant, read back by the enterprise
  and by the provider, exactly as the enterprise set it; and no write route, with any
  body, changes the grant or the provider's own role and status.
- Query strings: parameters a route does not declare are ignored, never assigned.
- Responses: a provider is never shown the properties that are the owner's only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from keys import LocalKeyServer
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION
from sandbox.server.app import create_app
from tests.security.authz_table import BY_KEY, Endpoint
from tests.security.authz_world import (
    GRANTED,
    PURPOSE,
    AuthzWorld,
    Tenant,
    build,
    job_body,
    send,
    target_for,
)

pytestmark = pytest.mark.integration

#: Fields an attacker would add to a body: owners, statuses, budgets, terms, audit fields.
#: Each value is one that would escalate if it were assigned.
MASS: dict[str, Any] = {
    "id": "prv_chosen_by_the_caller",
    "role": "operator",
    "status": "active",
    "scope": None,
    "tenant_id": "ent_someone_else",
    "enterprise_id": "ent_someone_else",
    "provider_id": "prv_someone_else",
    "grant_id": "grt_someone_else",
    "dataset_ids": ["ds_someone_else"],
    "columns": ["recipe_p1"],
    "tiers": [0, 1, 2, 3, 4, 5],
    "purposes": ["anything"],
    "epsilon": 100,
    "budget": {"epsilon": 100, "delta": 0.5},
    "epsilon_budget": 100,
    "epsilon_spent": 0,
    "epsilon_remaining": 100,
    "delta_budget": 0.5,
    "delta_spent": 0,
    "epsilon_cap": 100,
    "valid_from": "2000-01-01T00:00:00Z",
    "valid_until": "2100-01-01T00:00:00Z",
    "min_group_size": 1,
    "revoked_at": None,
    "created_at": "2000-01-01T00:00:00Z",
    "reviewer_id": "ent_someone_else",
    "sha256": "0" * 64,
    "approved": True,
    "cancel_requested": False,
    "result": {"rows": []},
    "is_admin": True,
}


def _json_write_routes() -> dict[tuple[str, str], set[str]]:
    """The write routes that take a JSON body, and the top-level fields each declares."""
    app = create_app(Settings(data_dir=Path(tempfile.gettempdir()) / "veil-authz-openapi"))
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    routes: dict[tuple[str, str], set[str]] = {}
    for route in app.routes:
        if not (isinstance(route, APIRoute) and route.path.startswith("/v1/")):
            continue
        for method in route.methods - {"GET", "HEAD", "OPTIONS"}:
            body = spec["paths"][route.path][method.lower()].get("requestBody", {})
            schema = body.get("content", {}).get("application/json", {}).get("schema")
            if schema is None:
                continue
            refs = [schema, *schema.get("anyOf", [])]
            name = next(s["$ref"].split("/")[-1] for s in refs if "$ref" in s)
            routes[(method, route.path)] = set(schemas[name]["properties"])
    return routes


JSON_ROUTES = _json_write_routes()


def _allowed_column(endpoint: Endpoint) -> str:
    """A caller that the route authorizes, naming its own tenant's object."""
    for column, status in endpoint.expect.items():
        if status not in (401, 403, 404) and not column.endswith("-other"):
            return column
    raise AssertionError(f"nobody may call {endpoint.key}")


def mass_cases() -> Iterator[Any]:
    assert len(JSON_ROUTES) >= 15
    for key, declared in sorted(JSON_ROUTES.items()):
        for name in MASS:
            if name not in declared:
                yield pytest.param(key, name, id=f"{key[0]} {key[1]}-{name}")


@pytest.fixture(scope="module")
def authz(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer
) -> Iterator[AuthzWorld]:
    yield from build(tmp_path_factory.mktemp("authz-properties"), key_server)


def _refused_as_schema(answer: Any, field: str) -> None:
    assert answer.status_code == 422, answer.text[:300]
    body = answer.json()
    assert body["code"] == "validation_error"
    assert any(p["location"].endswith(field) for p in body["problems"]), body


@pytest.mark.parametrize(("key", "field"), list(mass_cases()))
def test_an_undeclared_field_is_refused_and_changes_nothing(
    authz: AuthzWorld, key: tuple[str, str], field: str
) -> None:
    endpoint = BY_KEY[key]
    column = _allowed_column(endpoint)
    target = target_for(authz, endpoint, column)
    before = authz.state()
    answer = send(authz, endpoint, column, target, {field: MASS[field]})
    _refused_as_schema(answer, field)
    assert authz.state() == before


@pytest.mark.parametrize("where", ["columns", "privacy_unit"])
def test_a_dataset_declaration_refuses_nested_extra_fields(authz: AuthzWorld, where: str) -> None:
    body = {**DECLARATION, "name": "nested-extra"}
    if where == "columns":
        body["columns"] = [{**DECLARATION["columns"][0], "enterprise_id": "ent_someone_else"}]
    else:
        body["privacy_unit"] = {"id_column": None, "epsilon_budget": 100}
    before = authz.state()
    answer = authz.call(authz.tokens["enterprise"], "POST", "/v1/datasets", json=body)
    _refused_as_schema(answer, "enterprise_id" if where == "columns" else "epsilon_budget")
    assert authz.state() == before


# -- a provider's bodies: no value gives it more than its grant -------------------------------

#: A valid training document (tier 4, which the grant does not give).
TRAINING = {
    "family": "logistic_regression",
    "features": ["temperature_c"],
    "target": "failure_24h",
    "epsilon": 1.0,
    "delta": 1e-6,
}


def _escalations(a: Tenant, b: Tenant) -> dict[str, dict[str, Any]]:
    """Bodies of POST /v1/jobs (and previews) that try to get more than the grant gives."""
    base = job_body(a, a.dataset)
    query = base["query"]
    return {
        "tier 4 (not granted)": {**base, "tier": 4, "epsilon": 1.0, "delta": 1e-6,
                                 "query": TRAINING},
        "tier 0": {**base, "tier": 0},
        "tier 1": {**base, "tier": 1},
        "tier 6": {**base, "tier": 6},
        "tier -1": {**base, "tier": -1},
        "tier as text": {**base, "tier": "three"},
        "epsilon over the budget": {**base, "epsilon": 5.5},
        "epsilon at the maximum": {**base, "epsilon": 100},
        "epsilon past the maximum": {**base, "epsilon": 1e9},
        "epsilon negative": {**base, "epsilon": -1},
        "epsilon zero on tier 3": {**base, "epsilon": 0},
        "delta not granted": {**base, "delta": 0.5},
        "tier 2 paying epsilon": {**base, "tier": 2, "epsilon": 1.0},
        "purpose not granted": {**base, "purpose": "marketing"},
        "another tenant's dataset": {**base, "dataset_id": b.dataset},
        "a secret column": {**base, "query": {"aggregates": [{"kind": "sum",
                                                              "column": "recipe_p1"}]}},
        "an ungranted column": {**base, "query": {**query, "group_by": ["vibration_mm_s"]}},
        "a budget in the query": {**base, "query": {**query, "epsilon_budget": 100}},
        "a grant in the query": {**base, "query": {**query, "grant_id": b.grant}},
        "epsilon in an aggregate": {**base, "query": {"aggregates": [{"kind": "count",
                                                                      "epsilon": 100}]}},
        "another provider's code": {**base, "tier": 5, "epsilon": 0,
                                    "query": {"code_request_id": b.code}},
        "own code plus a grant": {**base, "tier": 5, "epsilon": 0,
                                  "query": {"code_request_id": a.code, "grant_id": b.grant}},
    }  # fmt: skip


#: The names of the attempts (the bodies need the world's ids).
ESCALATIONS = sorted(_escalations(*[Tenant(*["x"] * 11)] * 2))


def _grant_views(authz: AuthzWorld) -> tuple[dict[str, Any], dict[str, Any]]:
    a = authz.a
    provider_view = authz.ok(authz.tokens["provider"], "GET", f"/v1/grants/{a.grant}")
    return authz.grant_as_owner(a, a.grant), provider_view


@pytest.mark.parametrize("attempt", ESCALATIONS)
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/preview"])
def test_no_job_body_gets_a_provider_more_than_its_grant(
    authz: AuthzWorld, path: str, attempt: str
) -> None:
    body = _escalations(authz.a, authz.b)[attempt]
    grants_before, before = _grant_views(authz), authz.state()
    answer = authz.call(authz.tokens["provider"], "POST", path, json=body)
    if path == "/v1/jobs/preview" and answer.status_code == 200:
        assert answer.json()["allowed"] is False, attempt
    else:
        assert answer.status_code in (403, 422), (attempt, answer.status_code, answer.text[:300])
    assert _grant_views(authz) == grants_before
    assert authz.state() == before, "a refused submission debited or stored something"


#: Write routes on the caller's own API tokens (see the test below).
OWN_TOKEN_ROUTES = {
    ("POST", "/v1/tokens/{token_id}/revoke"),
    ("POST", "/v1/tokens/{token_id}/rotate"),
}


def test_no_write_route_lets_a_provider_change_its_grant_or_itself(authz: AuthzWorld) -> None:
    """Every JSON write route, sent by the provider with its own ids, its body carrying
    every grant term and principal field at an escalating value: refused, and its grant and
    its own account read back unchanged."""
    token = authz.tokens["provider"]
    grants_before = _grant_views(authz)
    me_before = authz.ok(token, "GET", "/v1/me")
    terms = {
        "epsilon": 100,
        "delta": 0.5,
        "tiers": [0, 1, 2, 3, 4, 5],
        "columns": [*GRANTED, "vibration_mm_s", "recipe_p1"],
        "purposes": [PURPOSE, "anything"],
        "valid_until": (datetime.now(UTC) + timedelta(days=3650)).isoformat(),
        "min_group_size": 1,
        "provider_id": authz.a.provider,
        "dataset_ids": [authz.a.dataset, authz.b.dataset],
        "reason": "more for me",
    }
    accepted = []
    for key in JSON_ROUTES:
        endpoint = BY_KEY[key]
        declared = JSON_ROUTES[key]
        attempts = [{k: v for k, v in terms.items() if k in declared}, terms | MASS]
        if key in OWN_TOKEN_ROUTES or key in (
            ("POST", "/v1/queries/translate"),
            ("POST", "/v1/letters/keys"),
        ):
            # Revoking or rotating its own token with a plain reason is the provider's right
            # (those bodies hold no grant term), as is registering its letter-signing key,
            # and translating SQL changes nothing (its body declares no grant term): only
            # the escalating body must be refused.
            attempts = attempts[1:]
        for extra in attempts:
            target = target_for(authz, endpoint, "provider-own", shared=True)
            answer = send(authz, endpoint, "provider-own", target, extra)
            refused = answer.status_code >= 400 or (
                key == ("POST", "/v1/jobs/preview") and answer.json()["allowed"] is False
            )
            if not refused:
                accepted.append((*key, sorted(extra)))
    assert not accepted
    assert _grant_views(authz) == grants_before
    assert authz.ok(token, "GET", "/v1/me") == me_before


def test_undeclared_query_parameters_are_never_assigned(authz: AuthzWorld) -> None:
    """Parameters a route does not declare are ignored: the job gets its own grant and tier."""
    a, b = authz.a, authz.b
    params = {"grant_id": b.grant, "tier": 5, "epsilon": 0, "provider_id": b.provider}
    job = authz.ok(
        authz.tokens["provider"], "POST", "/v1/jobs", params=params, json=job_body(a, a.dataset)
    )
    assert (job["grant_id"], job["tier"], job["epsilon"]) == (a.grant, 3, 0.01)
    assert (job["provider_id"], job["dataset_id"]) == (a.provider, a.dataset)
    mine = authz.ok(
        authz.tokens["enterprise"], "GET", "/v1/datasets", params={"enterprise_id": b.enterprise}
    )
    assert {d["enterprise_id"] for d in mine} == {a.enterprise}
    jobs = authz.ok(authz.tokens["provider"], "GET", "/v1/jobs", params={"provider_id": b.provider})
    assert {j["provider_id"] for j in jobs} == {a.provider}


def test_an_enterprise_grants_only_its_own_data_to_a_provider(authz: AuthzWorld) -> None:
    """A grant naming another tenant's dataset next to its own, or a principal that is not a
    provider, is refused as a whole: nothing is created."""
    a, b = authz.a, authz.b
    token, before = authz.tokens["enterprise"], authz.state()
    body = {
        "provider_id": a.provider,
        "dataset_ids": [a.dataset, b.dataset],
        "columns": GRANTED,
        "tiers": [3],
        "purposes": [PURPOSE],
        "valid_until": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "epsilon": 1,
    }
    assert authz.call(token, "POST", "/v1/grants", json=body).status_code == 404
    for not_a_provider in (b.enterprise, a.enterprise):
        one = {**body, "dataset_ids": [a.dataset], "provider_id": not_a_provider}
        assert authz.call(token, "POST", "/v1/grants", json=one).status_code == 404
    assert authz.state() == before


def test_a_provider_is_not_shown_the_owners_properties(authz: AuthzWorld) -> None:
    """Exact row counts, the enterprise-wide cap, and a held output are the owner's."""
    a = authz.a
    provider, enterprise = authz.tokens["provider"], authz.tokens["enterprise"]
    theirs = authz.ok(provider, "GET", f"/v1/datasets/{a.dataset}")
    owners = authz.ok(enterprise, "GET", f"/v1/datasets/{a.dataset}")
    assert theirs["cap"] is None and theirs["latest_version"]["row_count"] is None
    assert owners["cap"] is not None and owners["latest_version"]["row_count"] == 400
    held = authz.call(provider, "GET", f"/v1/jobs/{a.held_job}/result")
    assert held.status_code == 409
    job = authz.ok(provider, "GET", f"/v1/jobs/{a.held_job}")
    assert "output" not in job and "result" not in job
