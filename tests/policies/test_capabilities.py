"""The capability table of roles (policies/capabilities.py), its tenant scope, and an attack
on every API route by each role the table refuses.

The table is written out again here role by role, so that changing it fails a test and
the change is seen in review.  The route table below says which capability each /v1 route
needs; a route without an entry fails, so a new route cannot ship without deciding who
may call it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from policies.capabilities import (
    ALL_TENANTS,
    ROLES,
    Capability,
    Reach,
    may,
    require,
    roles_with,
    tenants_in_scope,
)
from policies.errors import Forbidden, NotFound
from policies.principals import Principal, Role
from sandbox.config.settings import Settings
from sandbox.server.app import create_app
from tests.security.authz_table import BY_KEY, RELATED, Endpoint
from tests.security.authz_world import AuthzWorld, send, target_for

C = Capability
ROOT = Path(__file__).resolve().parents[2]

#: Each role's capabilities, listed in full: the table must say exactly this.
EXPECTED: dict[Role, tuple[Reach, set[Capability]]] = {
    Role.OPERATOR: (
        Reach.ALL,
        {
            C.MANAGE_PRINCIPALS, C.LIST_PROVIDERS, C.ISSUE_TOKENS, C.MANAGE_ALL_TOKENS,
            C.MANAGE_PURPOSES, C.READ_COLLABORATIONS, C.READ_AUDIT, C.VERIFY_AUDIT,
            C.READ_ATTENTION, C.READ_KEY_AUDIT,
            C.SUSPEND_PROVIDER, C.READ_RECEIPTS, C.READ_IMPORTANT_DATA,
        },
    ),
    Role.SECURITY_OFFICER: (
        Reach.ASSIGNED,
        {
            C.READ_AUDIT, C.VERIFY_AUDIT, C.READ_ATTENTION, C.READ_KEY_AUDIT,
            C.SUSPEND_PROVIDER, C.READ_RECEIPTS, C.READ_IMPORTANT_DATA,
        },
    ),
    Role.ENTERPRISE: (
        Reach.OWN,
        {
            C.OWN_DATA, C.UPLOAD_DATA, C.CLASSIFY_DATA, C.GRANT_ACCESS, C.REVIEW_CODE,
            C.RATE_PROVIDERS, C.LIST_PROVIDERS, C.READ_RECEIPTS, C.READ_IMPORTANT_DATA,
            C.READ_DATASETS, C.READ_GRANTS, C.READ_JOBS, C.READ_CODE, C.AGREE_KPI_CONTRACTS,
        },
    ),
    Role.PROVIDER: (
        Reach.NONE,
        {
            C.USE_GRANTS, C.READ_CATALOG, C.SUBMIT_JOBS, C.SUBMIT_CODE, C.SIGN_LETTERS,
            C.PROPOSE_COLLABORATIONS, C.READ_COLLABORATIONS, C.READ_DATASETS, C.READ_GRANTS,
            C.READ_JOBS, C.READ_CODE, C.AGREE_KPI_CONTRACTS, C.READ_SCORECARDS,
        },
    ),
    Role.BUREAU: (
        Reach.NONE,
        {C.READ_PROGRAMME, C.MANAGE_PURPOSES, C.RUN_SCORECARDS, C.READ_SCORECARDS,
         C.MANAGE_ASSESSORS},
    ),
    # Its own assessments and nothing else: no tenant, no programme table, no scorecard.
    Role.ASSESSOR: (Reach.NONE, {C.ASSESS_PROVIDERS}),
}  # fmt: skip

#: What each /v1 route needs; None: any authenticated principal (or anyone, for health).
ROUTES: dict[tuple[str, str], Capability | None] = {
    ("GET", "/v1/health"): None,
    ("GET", "/v1/me"): None,
    ("POST", "/v1/enterprises"): C.MANAGE_PRINCIPALS,
    ("GET", "/v1/enterprises"): C.MANAGE_PRINCIPALS,
    ("POST", "/v1/providers"): C.MANAGE_PRINCIPALS,
    ("POST", "/v1/nodes"): C.MANAGE_PRINCIPALS,
    ("GET", "/v1/nodes"): C.MANAGE_PRINCIPALS,
    ("POST", "/v1/nodes/{enterprise_id}/enrolment-code"): C.MANAGE_PRINCIPALS,
    ("GET", "/v1/providers"): C.LIST_PROVIDERS,
    ("POST", "/v1/security-officers"): C.MANAGE_PRINCIPALS,
    ("POST", "/v1/bureau"): C.MANAGE_PRINCIPALS,
    ("PATCH", "/v1/enterprises/{enterprise_id}/categories"): C.MANAGE_PRINCIPALS,
    ("POST", "/v1/principals/{principal_id}/tokens"): C.ISSUE_TOKENS,
    # Everyone's own tokens; the operator's MANAGE_ALL_TOKENS reaches the others'.
    ("GET", "/v1/tokens"): None,
    ("POST", "/v1/tokens/{token_id}/revoke"): None,
    ("POST", "/v1/tokens/{token_id}/rotate"): None,
    ("POST", "/v1/datasets"): C.UPLOAD_DATA,
    ("GET", "/v1/datasets"): C.READ_DATASETS,
    ("GET", "/v1/datasets/{dataset_id}"): C.READ_DATASETS,
    ("GET", "/v1/catalog"): C.READ_CATALOG,
    ("GET", "/v1/datasets/{dataset_id}/mock"): C.READ_DATASETS,
    ("POST", "/v1/datasets/{dataset_id}/versions"): C.UPLOAD_DATA,
    ("GET", "/v1/datasets/{dataset_id}/classification"): C.READ_DATASETS,
    ("PUT", "/v1/datasets/{dataset_id}/classification"): C.CLASSIFY_DATA,
    ("GET", "/v1/sources"): C.OWN_DATA,
    ("PUT", "/v1/datasets/{dataset_id}/source"): C.UPLOAD_DATA,
    ("GET", "/v1/datasets/{dataset_id}/source"): C.OWN_DATA,
    ("PUT", "/v1/datasets/{dataset_id}/source/mapping"): C.UPLOAD_DATA,
    ("POST", "/v1/datasets/{dataset_id}/source/run"): C.UPLOAD_DATA,
    ("POST", "/v1/grants"): C.GRANT_ACCESS,
    ("GET", "/v1/grants"): C.READ_GRANTS,
    ("GET", "/v1/grants/{grant_id}"): C.READ_GRANTS,
    ("PATCH", "/v1/grants/{grant_id}"): C.GRANT_ACCESS,
    ("POST", "/v1/grants/{grant_id}/revoke"): C.GRANT_ACCESS,
    ("POST", "/v1/jobs"): C.SUBMIT_JOBS,
    ("POST", "/v1/jobs/preview"): C.SUBMIT_JOBS,
    ("POST", "/v1/jobs/{job_id}/cancel"): C.SUBMIT_JOBS,
    ("POST", "/v1/queries/translate"): C.SUBMIT_JOBS,
    ("POST", "/v1/collaborations"): C.PROPOSE_COLLABORATIONS,
    ("GET", "/v1/collaborations"): C.READ_COLLABORATIONS,
    ("GET", "/v1/collaborations/{collaboration_id}"): C.READ_COLLABORATIONS,
    ("POST", "/v1/collaborations/{collaboration_id}/close"): C.PROPOSE_COLLABORATIONS,
    ("POST", "/v1/collaborations/{collaboration_id}/runs"): C.PROPOSE_COLLABORATIONS,
    ("GET", "/v1/collaborations/{collaboration_id}/runs/{run_id}"): C.READ_COLLABORATIONS,
    ("POST", "/v1/kpi-contracts"): C.AGREE_KPI_CONTRACTS,
    ("GET", "/v1/kpi-contracts"): C.AGREE_KPI_CONTRACTS,
    ("GET", "/v1/kpi-contracts/{contract_id}"): C.AGREE_KPI_CONTRACTS,
    ("POST", "/v1/kpi-contracts/{contract_id}/accept"): C.AGREE_KPI_CONTRACTS,
    ("POST", "/v1/kpi-contracts/{contract_id}/decline"): C.AGREE_KPI_CONTRACTS,
    ("POST", "/v1/kpi-contracts/{contract_id}/evaluations"): C.AGREE_KPI_CONTRACTS,
    ("GET", "/v1/kpi-contracts/{contract_id}/verdicts"): C.AGREE_KPI_CONTRACTS,
    ("GET", "/v1/kpi-contracts/{contract_id}/verdicts/{verdict_id}"): C.AGREE_KPI_CONTRACTS,
    ("GET", "/v1/jobs/{job_id}/model"): C.READ_JOBS,
    ("GET", "/v1/schemas/training"): None,
    ("GET", "/v1/schemas/query"): None,
    ("GET", "/v1/jobs"): C.READ_JOBS,
    ("GET", "/v1/jobs/{job_id}"): C.READ_JOBS,
    ("GET", "/v1/jobs/{job_id}/result"): C.READ_JOBS,
    ("POST", "/v1/code-requests"): C.SUBMIT_CODE,
    ("GET", "/v1/code-requests"): C.READ_CODE,
    ("GET", "/v1/code-requests/{code_id}"): C.READ_CODE,
    ("POST", "/v1/code-requests/{code_id}/approve"): C.REVIEW_CODE,
    ("POST", "/v1/code-requests/{code_id}/deny"): C.REVIEW_CODE,
    ("GET", "/v1/jobs/{job_id}/held"): C.REVIEW_CODE,
    ("POST", "/v1/jobs/{job_id}/release"): C.REVIEW_CODE,
    ("POST", "/v1/jobs/{job_id}/reject"): C.REVIEW_CODE,
    ("GET", "/v1/audit/events"): C.READ_AUDIT,
    ("GET", "/v1/audit/export"): C.READ_AUDIT,
    ("GET", "/v1/audit/public-key"): None,
    ("POST", "/v1/audit/checkpoints"): C.VERIFY_AUDIT,
    ("GET", "/v1/audit/verify"): C.VERIFY_AUDIT,
    ("POST", "/v1/audit/verifications"): C.VERIFY_AUDIT,
    ("GET", "/v1/audit/attention"): C.READ_ATTENTION,
    ("GET", "/v1/audit/keys"): C.READ_KEY_AUDIT,
    ("POST", "/v1/providers/{provider_id}/suspend"): C.SUSPEND_PROVIDER,
    ("POST", "/v1/providers/{provider_id}/reinstate"): C.SUSPEND_PROVIDER,
    ("GET", "/v1/receipts"): C.READ_RECEIPTS,
    ("GET", "/v1/purposes"): None,
    ("PUT", "/v1/purposes/{code}"): C.MANAGE_PURPOSES,
    ("POST", "/v1/letters/keys"): C.SIGN_LETTERS,
    ("POST", "/v1/grants/{grant_id}/letter"): C.GRANT_ACCESS,
    ("GET", "/v1/grants/{grant_id}/letter"): C.READ_GRANTS,
    ("POST", "/v1/grants/{grant_id}/letter/signature"): C.SIGN_LETTERS,
    ("GET", "/v1/grants/{grant_id}/evidence"): C.READ_RECEIPTS,
    ("GET", "/v1/important-data"): C.READ_IMPORTANT_DATA,
    ("GET", "/v1/programme"): C.READ_PROGRAMME,
    ("GET", "/v1/programme/{table}"): C.READ_PROGRAMME,
    ("POST", "/v1/programme/periods"): C.RUN_SCORECARDS,
    ("GET", "/v1/programme/periods"): C.RUN_SCORECARDS,
    ("POST", "/v1/programme/periods/{period_id}/close"): C.RUN_SCORECARDS,
    ("POST", "/v1/programme/assessments"): C.RUN_SCORECARDS,
    ("POST", "/v1/programme/ratings"): C.RATE_PROVIDERS,
    ("GET", "/v1/scorecards"): C.READ_SCORECARDS,
    ("GET", "/v1/scorecards/{scorecard_id}"): C.READ_SCORECARDS,
    ("GET", "/v1/exits"): C.READ_SCORECARDS,
    ("GET", "/v1/exits/providers"): C.RUN_SCORECARDS,
    ("POST", "/v1/exits/{exit_id}/decide"): C.RUN_SCORECARDS,
    ("POST", "/v1/assessors"): C.MANAGE_ASSESSORS,
    ("GET", "/v1/assessors"): C.MANAGE_ASSESSORS,
    ("POST", "/v1/assessors/{assessor_id}/suspend"): C.MANAGE_ASSESSORS,
    ("POST", "/v1/assessors/{assessor_id}/reinstate"): C.MANAGE_ASSESSORS,
    ("POST", "/v1/assessments"): C.ASSESS_PROVIDERS,
    ("GET", "/v1/assessments"): C.ASSESS_PROVIDERS,
}

#: Capabilities no route needs as such: they pick the side a principal sees (the owner's
#: or the grantee's), or widen "one's own tokens" to everyone's.
RELATIONS = {C.OWN_DATA, C.USE_GRANTS, C.MANAGE_ALL_TOKENS}

#: The authorization tests' caller (tests/security/authz_table.py) acting for each role.
CALLERS: dict[Role, tuple[str, ...]] = {
    Role.OPERATOR: ("operator",),
    Role.SECURITY_OFFICER: ("officer", "officer-scoped"),
    Role.ENTERPRISE: ("enterprise",),
    Role.PROVIDER: ("provider",),
    Role.BUREAU: ("bureau",),
    Role.ASSESSOR: ("assessor",),
}


def principal(role: Role, scope: list[str] | None = None, ident: str = "p1") -> Principal:
    return Principal(id=ident, role=role, name="n", scope=scope)


# -- the table -------------------------------------------------------------------------------


def test_table_is_exactly_the_expected_one() -> None:
    assert set(ROLES) == set(Role), "every role needs an entry in policies.capabilities.ROLES"
    for role, (reach, capabilities) in EXPECTED.items():
        assert ROLES[role].reach is reach, role
        assert set(ROLES[role].capabilities) == capabilities, role


def test_every_capability_is_held_and_used() -> None:
    held = {c for rules in ROLES.values() for c in rules.capabilities}
    assert held == set(Capability), f"capabilities nobody holds: {set(Capability) - held}"
    used = {c for c in ROUTES.values() if c is not None} | RELATIONS
    assert used == set(Capability), f"capabilities no route needs: {set(Capability) - used}"


def test_refusal_names_the_roles_allowed_in_table_order() -> None:
    assert roles_with(C.READ_AUDIT) == (Role.OPERATOR, Role.SECURITY_OFFICER)
    with pytest.raises(Forbidden) as refused:
        require(principal(Role.PROVIDER), C.READ_AUDIT)
    assert refused.value.message == "only operator or security_officer principals may do this"
    assert refused.value.code == "forbidden"


def test_an_unknown_role_may_nothing() -> None:
    stranger = principal(Role.OPERATOR)
    stranger.role = "auditor"  # a role written in the database but not in the table
    assert not any(may(stranger, c) for c in Capability)
    assert tenants_in_scope(stranger).ids == ()
    with pytest.raises(Forbidden):
        require(stranger, C.READ_AUDIT)


# -- tenant scope ----------------------------------------------------------------------------


def test_scope_of_each_role() -> None:
    assert tenants_in_scope(principal(Role.OPERATOR)) == ALL_TENANTS
    assert tenants_in_scope(principal(Role.SECURITY_OFFICER, None)) == ALL_TENANTS
    scoped = tenants_in_scope(principal(Role.SECURITY_OFFICER, ["ent_b", "ent_a"]))
    assert scoped.ids == ("ent_b", "ent_a") and scoped.as_list() == ["ent_b", "ent_a"]
    assert "ent_a" in scoped and "ent_c" not in scoped and not scoped.everything
    assert scoped.reaches_any(["ent_c", "ent_a"]) and not scoped.reaches_any(["ent_c"])
    assert tenants_in_scope(principal(Role.SECURITY_OFFICER, [])).ids == ()
    assert tenants_in_scope(principal(Role.ENTERPRISE, ident="ent_a")).ids == ("ent_a",)
    assert tenants_in_scope(principal(Role.PROVIDER)).ids == ()
    assert tenants_in_scope(principal(Role.BUREAU)).ids == ()  # aggregates, never a tenant
    assert tenants_in_scope(principal(Role.ASSESSOR)).ids == ()  # providers' scores only
    assert ALL_TENANTS.as_list() is None and "anything" in ALL_TENANTS
    assert ALL_TENANTS.reaches_any([])  # a provider nobody granted: the operator reaches it


def test_a_scope_ignored_where_the_role_has_none() -> None:
    """A stray ``scope`` on an operator or enterprise row narrows nothing and widens nothing."""
    assert tenants_in_scope(principal(Role.OPERATOR, ["ent_a"])) == ALL_TENANTS
    enterprise = principal(Role.ENTERPRISE, None, ident="ent_a")
    assert tenants_in_scope(enterprise).ids == ("ent_a",)


def test_may_and_require_over_tenants() -> None:
    officer = principal(Role.SECURITY_OFFICER, ["ent_a"])
    assert may(officer, C.READ_RECEIPTS, "ent_a")
    assert not may(officer, C.READ_RECEIPTS, "ent_b")
    assert not may(officer, C.UPLOAD_DATA, "ent_a")  # the role first, whatever the tenant
    require(officer, C.READ_RECEIPTS, "ent_a")
    with pytest.raises(NotFound) as outside:
        require(officer, C.READ_RECEIPTS, "ent_b")
    assert outside.value.message == "enterprise 'ent_b' not found"
    with pytest.raises(NotFound, match="provider 'ent_b'"):
        require(officer, C.SUSPEND_PROVIDER, "ent_b", kind="provider")
    enterprise = principal(Role.ENTERPRISE, ident="ent_a")
    assert may(enterprise, C.READ_RECEIPTS, "ent_a")
    assert not may(enterprise, C.READ_RECEIPTS, "ent_b")
    assert may(principal(Role.OPERATOR), C.READ_RECEIPTS, "ent_zz")


OFFICER_SCOPE = re.compile(r"\b(principal|caller|officer|p)\.scope\b")


def test_officer_scope_is_read_in_one_place() -> None:
    """The rule "which tenants does this officer oversee" exists once: a second copy that
    reads ``.scope`` itself fails here (the principals route only echoes it back)."""
    readers = sorted(
        str(path.relative_to(ROOT))
        for package in ("sandbox", "policies")
        for path in (ROOT / package).rglob("*.py")
        if OFFICER_SCOPE.search(path.read_text(encoding="utf-8"))
    )
    assert readers == ["policies/capabilities.py", "sandbox/api/routes_principals.py"]
    assert "require_role" not in (ROOT / "sandbox" / "accounts" / "tenants.py").read_text(
        encoding="utf-8"
    )


def test_console_pages_ask_the_table() -> None:
    """Templates neither compare a role nor read an officer's scope: they get ``may`` and
    ``tenant_scope`` from the page's context (sandbox/console/render.py)."""
    templates = ROOT / "sandbox" / "console" / "templates"
    asking = re.compile(r"principal\.(role|scope)\b")
    offenders = sorted(
        p.name for p in templates.rglob("*.html") if asking.search(p.read_text(encoding="utf-8"))
    )
    assert not offenders, f"templates deciding by role or scope themselves: {offenders}"


# -- every route against every role ---------------------------------------------------------


def api_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path / "veil"))
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/")
        for method in route.methods - {"HEAD", "OPTIONS"}
    }


def test_every_api_route_names_its_capability(tmp_path: Path) -> None:
    routes = api_routes(tmp_path)
    missing = sorted(routes - set(ROUTES))
    assert not missing, f"say in ROUTES which capability these routes need: {missing}"
    stale = sorted(set(ROUTES) - routes)
    assert not stale, f"ROUTES names routes the app does not have: {stale}"


def column(name: str, endpoint: Endpoint) -> str:
    """The authorization tests' column for ``name`` naming its own tenant's objects."""
    return f"{name}-own" if endpoint.target is not None and name in RELATED else name


def attacks() -> Iterator[object]:
    for key, capability in ROUTES.items():
        if capability is None:
            continue
        for role in Role:
            for name in CALLERS[role]:
                yield pytest.param(key, capability, role, name, id=f"{key[0]} {key[1]}-{name}")


@pytest.mark.integration
@pytest.mark.parametrize(("key", "capability", "role", "name"), list(attacks()))
def test_route_refuses_roles_without_its_capability(
    authz: AuthzWorld, key: tuple[str, str], capability: Capability, role: Role, name: str
) -> None:
    """A role the table refuses gets 403 or 404 and changes nothing; a role it allows is
    never refused for its role (it may still be refused for the object, or by policy)."""
    endpoint = BY_KEY.get(key)
    assert endpoint is not None, f"{key}: give it a row in tests/security/authz_table.py"
    caller = column(name, endpoint)
    target = target_for(authz, endpoint, caller)  # may make a fresh object: before the snapshot
    before = authz.state()
    answer = send(authz, endpoint, caller, target)
    refused_for_role = answer.status_code == 403 and "principals may do this" in answer.text
    if capability in ROLES[role].capabilities:
        assert not refused_for_role, f"{key} refused {name}, which holds {capability}"
        return
    assert answer.status_code in (403, 404), f"{key} as {name}: {answer.status_code}"
    assert authz.state() == before, f"{key} as {name} changed the stored state"
