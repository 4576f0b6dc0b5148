"""Security officers are read-only, except for suspension (and their own API tokens); scoped
ones see only their tenants.

The write routes are enumerated from the app at test time, so a new write
route is checked without touching this file.  Path parameters are filled with
ids of real objects and bodies are plausible, so that neither a 404 nor a 422
can hide a missing role check; and a 403 must be the role refusal, not a policy
denial (which would carry ``reasons``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from policies import audit
from policies.db import new_id
from sandbox.demo.data import DECLARATION
from sandbox.runtime.veil import Veil
from sandbox.server.app import create_app
from sandbox.store.models import CodeRequest, CodeStatus
from tests.sandbox.conftest import GRANTED, PURPOSE, World

pytestmark = pytest.mark.integration

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: What an officer may do: suspension, signing a checkpoint and recording a full
#: verification of the chain (they change no data).
ALLOWED = {
    ("POST", "/v1/providers/{provider_id}/suspend"): 200,
    ("POST", "/v1/providers/{provider_id}/reinstate"): 200,
    ("POST", "/v1/audit/checkpoints"): 201,
    ("POST", "/v1/audit/verifications"): 201,
}
#: An officer may revoke or rotate only its own API tokens: another's (here the provider's)
#: is 404, as an unknown id (the matrix in tests/security/authz_table.py has every caller).
OTHERS_TOKENS = {
    ("POST", "/v1/tokens/{token_id}/revoke"): 404,
    ("POST", "/v1/tokens/{token_id}/rotate"): 404,
}
SOURCE = "def count_rows(data):\n    return len(data)\n"


def write_routes(veil: Veil) -> list[tuple[str, str]]:
    """The API's write routes (the web console's are checked in tests/console)."""
    app = create_app(veil.settings, veil)
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/")
        for method in route.methods & WRITE_METHODS
    )


def bodies(world: World) -> dict[str, Any]:
    """A plausible body per request schema: one that its owner's role would get accepted."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return {
        "EnterpriseIn": {"name": "Initech", "slug": f"initech-{new_id('x')[-8:]}"},
        "ProviderIn": {"name": "Sneaky Analytics"},
        "SecurityOfficerIn": {"name": "Eve", "scope": None},
        "DatasetIn": DECLARATION,
        "GrantIn": {
            "provider_id": world.provider_id,
            "dataset_ids": [world.dataset_id],
            "columns": GRANTED,
            "tiers": [3],
            "purposes": [PURPOSE],
            "valid_until": tomorrow,
            "epsilon": 0.5,
        },
        "GrantChangeIn": {"reason": "narrower", "epsilon": 0.5},
        "RevokeIn": {"reason": "no longer needed"},
        "JobIn": {
            "dataset_id": world.dataset_id,
            "purpose": PURPOSE,
            "tier": 3,
            "epsilon": 0.1,
            "query": {"aggregates": [{"kind": "count"}]},
        },
        "CodeIn": {"dataset_id": world.dataset_id, "purpose": PURPOSE, "source": SOURCE},
        "ReasonIn": {"reason": "looks right"},
        "SuspensionIn": {"reason": "review of denied attempts"},
    }


def example(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """A value of a JSON schema, for request schemas this test does not know yet."""
    if "$ref" in schema:
        return example(spec["components"]["schemas"][schema["$ref"].split("/")[-1]], spec)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return example(options[0], spec)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        required = schema.get("required", [])
        return {
            k: example(v, spec) for k, v in schema.get("properties", {}).items() if k in required
        }
    if kind == "array":
        return [example(schema.get("items", {}), spec)] * max(1, schema.get("minItems", 1))
    if kind == "string":
        if schema.get("format") == "date-time":
            return (datetime.now(UTC) + timedelta(days=1)).isoformat()
        return "plausible"
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    return False if kind == "boolean" else None


class Requester:
    """Sends one write request to a route, with real ids and a plausible body."""

    def __init__(self, veil: Veil, world: World, ids: dict[str, str]) -> None:
        self.spec = create_app(veil.settings, veil).openapi()
        self.world, self.ids, self.bodies = world, ids, bodies(world)

    def send(self, client: httpx.Client, method: str, path: str) -> httpx.Response:
        operation = self.spec["paths"][path][method.lower()]
        url = path
        params: dict[str, Any] = {}
        for param in operation.get("parameters", []):
            name = param["name"]
            if param["in"] == "path":
                if name not in self.ids:
                    pytest.fail(f"{method} {path}: give this test a real id for '{name}'")
                url = url.replace("{" + name + "}", self.ids[name])
            elif param["in"] == "query" and param.get("required"):
                params[name] = self.ids.get(name) or example(param["schema"], self.spec)
        return client.request(method, url, params=params, **self._body(operation, method, path))

    def _body(self, operation: dict[str, Any], method: str, path: str) -> dict[str, Any]:
        content = (operation.get("requestBody") or {}).get("content", {})
        if not content:
            return {}
        if "application/json" not in content:  # a raw upload: the world's own CSV
            media = "text/csv" if "text/csv" in content else next(iter(content))
            return {"content": self.world.csv, "headers": {"content-type": media}}
        schema = content["application/json"]["schema"]
        refs = [schema, *schema.get("anyOf", [])]
        names = [s["$ref"].split("/")[-1] for s in refs if "$ref" in s]
        if names and names[0] in self.bodies:
            return {"json": self.bodies[names[0]]}
        return {"json": example(schema, self.spec)}


def make_officer(world: World, scope: list[str] | None) -> tuple[str, httpx.Client]:
    officer = world.operator.create_security_officer("Olivia", scope)
    token = world.operator.issue_token(officer["id"])
    headers = {"Authorization": f"Bearer {token}"}
    return officer["id"], httpx.Client(base_url=world.url, headers=headers, timeout=60)


def real_ids(veil: Veil, world: World) -> dict[str, str]:
    """Ids of existing objects of the world, one per path parameter name."""
    acme_id = world.acme.me()["id"]
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, [{"kind": "count"}])
    code_id = new_id("code")
    with veil.db.transaction() as session:  # a pending code request, without running PySyft
        session.add(
            CodeRequest(
                id=code_id,
                provider_id=world.provider_id,
                enterprise_id=acme_id,
                dataset_id=world.dataset_id,
                purpose=PURPOSE,
                function_name="count_rows",
                source=SOURCE,
                sha256="0" * 64,
                columns=["machine"],
                status=CodeStatus.PENDING,
                created_at=veil.clock(),
            )
        )
    return {
        "dataset_id": world.dataset_id,
        "grant_id": world.grant_id,
        "job_id": job["id"],
        "code_id": code_id,
        "principal_id": world.provider_id,
        "provider_id": world.provider_id,
        "enterprise_id": acme_id,
        "tenant_id": acme_id,
        "token_id": world.operator.list_tokens(world.provider_id)[0]["id"],
        "code": "process-optimization",  # a purpose of the vocabulary
        "collaboration_id": world.provider.propose_collaboration(
            "t", "p", [{"name": "x", "type": "float"}],
            {"statistics": [{"kind": "count"}], "epsilon": 1.0},
        )["id"],
        "contract_id": world.provider.propose_kpi_contract(
            {"dataset_id": world.dataset_id, "purpose": PURPOSE, "target": 0.05, "epsilon": 0.1,
             "kpi": {"kpi": "lead_time", "columns": {"lead_time": "cycle_time_s"},
                     "time_column": "temperature_c", "baseline": {"from": 20, "to": 60},
                     "evaluation": {"from": 60, "to": 120}}},
        )["id"],
        "verdict_id": "vrd_none",
        "period_id": "per_none", "scorecard_id": "scd_none", "exit_id": "exi_none",
        "assessor_id": "asr_none",  # the bureau's: an officer is refused for its role first
    }  # fmt: skip


@pytest.mark.parametrize("scoped", [False, True], ids=["unscoped", "scoped"])
def test_every_write_route_refuses_a_security_officer(
    veil: Veil, world: World, scoped: bool
) -> None:
    ids = real_ids(veil, world)
    officer_id, client = make_officer(world, [ids["enterprise_id"]] if scoped else None)
    requester = Requester(veil, world, ids)
    routes = write_routes(veil)
    print("\nwrite routes checked:", *(f"{m} {p}" for m, p in routes), sep="\n  ")
    assert ("POST", "/v1/grants") in routes and len(routes) >= 15
    assert set(ALLOWED) <= set(routes)

    wrong: dict[str, str] = {}
    with client:
        for method, path in routes:
            if (method, path) in ALLOWED:
                continue
            answer = requester.send(client, method, path)
            body = answer.json() if answer.content else {}
            if answer.status_code != OTHERS_TOKENS.get((method, path), 403) or "reasons" in body:
                wrong[f"{method} {path}"] = f"{answer.status_code} {body}"
        assert not wrong, f"write routes that did not refuse a security officer: {wrong}"

        for method, path in ALLOWED:  # suspend first, then reinstate: the dict's order
            answer = requester.send(client, method, path)
            assert answer.status_code == ALLOWED[(method, path)], (path, answer.text)

    # The refused requests changed nothing: the officer acted only by suspending (and by
    # recording a verification of the chain, which is an audit event only).
    with veil.db.transaction() as session:
        actions = set(
            session.scalars(
                select(audit.AuditEvent.action).where(audit.AuditEvent.actor_id == officer_id)
            )
        )
    assert actions <= {
        "provider.suspended",
        "provider.reinstated",
        "job.cancelled",
        "job.cancel_requested",
        "audit.verified",
    }
    assert {"provider.suspended", "provider.reinstated"} <= actions


def test_a_scoped_officer_reads_only_its_tenants_events(world: World) -> None:
    acme_id, globex_id = world.acme.me()["id"], world.globex.me()["id"]
    _, scoped = make_officer(world, [acme_id])
    _, unscoped = make_officer(world, None)
    with scoped, unscoped:
        mine = scoped.get("/v1/audit/events", params={"limit": 1000}).json()
        everything = unscoped.get("/v1/audit/events", params={"limit": 1000}).json()
    assert mine and {e["tenant_id"] for e in mine} == {acme_id}
    tenants = {e["tenant_id"] for e in everything}
    assert {acme_id, globex_id, None} <= tenants
    assert len(everything) > len(mine)
