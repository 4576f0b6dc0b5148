"""The console against the capability table: every page, every role (see test_capabilities.py).

A session of a role the table refuses, with a valid CSRF token and real ids of its tenant's
objects, is refused and changes nothing; a role holding the capability is never refused a
page.  A console route without an entry in ``CONSOLE`` fails, like an API route without one
in ``ROUTES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from policies.capabilities import ROLES, Capability
from policies.principals import Role
from sandbox.config.settings import Settings
from sandbox.console.session import csrf_token
from sandbox.server.app import create_app
from tests.policies.test_capabilities import CALLERS
from tests.security.authz_world import AuthzWorld

C = Capability

# -- every console page against every role --------------------------------------------------

#: What each console route needs; None: any session (or none, for logging in).  The
#: console's pages are per side: the enterprise's need ``own_data`` (the data holder's
#: console), the provider's ``use_grants``, the operator's ``manage_principals``.
CONSOLE: dict[tuple[str, str], Capability | None] = {
    ("GET", "/console/"): None,
    ("GET", "/console/language"): None,
    ("GET", "/console/timezone"): None,
    ("GET", "/console/preferences"): None,
    ("GET", "/console/login"): None,
    ("POST", "/console/login"): None,
    ("POST", "/console/logout"): None,
    ("GET", "/console/tokens"): None,
    ("POST", "/console/tokens/{token_id}/revoke"): None,
    ("POST", "/console/tokens/{token_id}/rotate"): None,
    ("GET", "/console/datasets"): C.OWN_DATA,
    ("POST", "/console/datasets/{dataset_id}/classification"): C.CLASSIFY_DATA,
    ("GET", "/console/important-data.{fmt}"): C.OWN_DATA,
    ("POST", "/console/datasets/detect"): C.UPLOAD_DATA,
    ("POST", "/console/datasets"): C.UPLOAD_DATA,
    ("POST", "/console/datasets/{dataset_id}/versions"): C.UPLOAD_DATA,
    ("GET", "/console/grants"): C.OWN_DATA,
    ("POST", "/console/grants"): C.GRANT_ACCESS,
    ("POST", "/console/grants/{grant_id}/change"): C.GRANT_ACCESS,
    ("POST", "/console/grants/{grant_id}/revoke"): C.GRANT_ACCESS,
    ("POST", "/console/grants/{grant_id}/letter"): C.GRANT_ACCESS,
    ("GET", "/console/letters/{grant_id}"): C.READ_GRANTS,
    ("GET", "/console/code"): C.REVIEW_CODE,
    ("POST", "/console/code/{code_id}/{decision}"): C.REVIEW_CODE,
    ("GET", "/console/receipts"): C.OWN_DATA,
    ("POST", "/console/receipts"): C.OWN_DATA,
    ("GET", "/console/receipts/{kind}"): C.OWN_DATA,
    ("GET", "/console/sources"): C.OWN_DATA,
    ("POST", "/console/sources/{dataset_id}/run"): C.UPLOAD_DATA,
    ("GET", "/console/kpi"): C.AGREE_KPI_CONTRACTS,
    ("POST", "/console/kpi/{contract_id}/{action}"): C.AGREE_KPI_CONTRACTS,
    ("GET", "/console/catalog"): C.READ_CATALOG,
    ("GET", "/console/catalog/{dataset_id}/mock.csv"): C.USE_GRANTS,
    ("GET", "/console/query"): C.SUBMIT_JOBS,
    ("POST", "/console/query/preview"): C.SUBMIT_JOBS,
    ("POST", "/console/query"): C.SUBMIT_JOBS,
    ("POST", "/console/query/sql/translate"): C.SUBMIT_JOBS,
    ("POST", "/console/query/sql/preview"): C.SUBMIT_JOBS,
    ("POST", "/console/query/sql"): C.SUBMIT_JOBS,
    ("GET", "/console/jobs"): C.USE_GRANTS,
    ("GET", "/console/jobs/{job_id}"): C.USE_GRANTS,
    ("POST", "/console/jobs/{job_id}/cancel"): C.SUBMIT_JOBS,
    ("GET", "/console/audit"): C.READ_AUDIT,
    ("GET", "/console/audit/export"): C.READ_AUDIT,
    ("GET", "/console/audit/public-key"): None,  # not secret, as in the API
    ("GET", "/console/attention"): C.READ_ATTENTION,
    ("GET", "/console/providers"): C.SUSPEND_PROVIDER,
    ("POST", "/console/providers/{provider_id}/suspend"): C.SUSPEND_PROVIDER,
    ("POST", "/console/providers/{provider_id}/reinstate"): C.SUSPEND_PROVIDER,
    ("GET", "/console/programme"): C.READ_PROGRAMME,
    ("GET", "/console/programme/{table}.{fmt}"): C.READ_PROGRAMME,
    ("GET", "/console/scorecards"): C.READ_SCORECARDS,
    ("GET", "/console/assessments"): C.ASSESS_PROVIDERS,
    ("POST", "/console/assessments"): C.ASSESS_PROVIDERS,
    ("GET", "/console/operator/enterprises"): C.MANAGE_PRINCIPALS,
    ("GET", "/console/operator/providers"): C.MANAGE_PRINCIPALS,
    ("GET", "/console/operator/officers"): C.MANAGE_PRINCIPALS,
    ("POST", "/console/operator/enterprises"): C.MANAGE_PRINCIPALS,
    ("POST", "/console/operator/providers"): C.MANAGE_PRINCIPALS,
    ("POST", "/console/operator/officers"): C.MANAGE_PRINCIPALS,
    ("GET", "/console/operator/bureau"): C.MANAGE_PRINCIPALS,
    ("POST", "/console/operator/bureau"): C.MANAGE_PRINCIPALS,
    ("POST", "/console/operator/tokens"): C.ISSUE_TOKENS,
}


def console_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path / "veil"))
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/console/")
        for method in route.methods - {"HEAD", "OPTIONS"}
    }


def test_every_console_route_names_its_capability(tmp_path: Path) -> None:
    routes = console_routes(tmp_path)
    missing = sorted(routes - set(CONSOLE))
    assert not missing, f"say in CONSOLE which capability these pages need: {missing}"
    stale = sorted(set(CONSOLE) - routes)
    assert not stale, f"CONSOLE names pages the app does not have: {stale}"


def console_cases(*, holders: bool) -> Iterator[object]:
    """(route, role, caller) for each role refused (or, with ``holders``, allowed: then only
    pages, whose reading uses nothing up) by the route's capability."""
    for key, capability in CONSOLE.items():
        if capability is None or (holders and key[0] != "GET"):
            continue
        for role in Role:
            if (capability in ROLES[role].capabilities) != holders:
                continue
            for name in CALLERS[role]:
                yield pytest.param(key, role, name, id=f"{key[0]} {key[1]}-{name}")


def console_send(authz: AuthzWorld, key: tuple[str, str], name: str) -> httpx.Response:
    """``name``'s request to the console route ``key``, with a valid CSRF token."""
    method, path = key
    token = authz.tokens[name]
    assert token is not None
    csrf = csrf_token(token)
    form = {"csrf": csrf, "reason": "checking", "epsilon": "0.1", "name": "x", "slug": "x"}
    with httpx.Client(base_url=authz.url, cookies={"veil_console": token}) as http:
        return http.request(
            method,
            console_url(authz, path),
            data=form if method == "POST" else None,
            headers={"x-csrf-token": csrf},
        )


def console_url(authz: AuthzWorld, path: str) -> str:
    a = authz.a
    ids = {
        "dataset_id": a.dataset,
        "grant_id": a.grant,
        "job_id": a.queued_job,
        "code_id": a.code,
        "decision": "approve",
        "provider_id": a.provider,
        "token_id": "tok_x",
        "kind": "receipt.pdf",
        "fmt": "csv",
        "table": "participation",
        "contract_id": a.kpi_contract,
        "action": "decline",
    }
    return re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)


@pytest.mark.integration
@pytest.mark.parametrize(("key", "role", "name"), list(console_cases(holders=False)))
def test_console_refuses_roles_without_the_capability(
    authz: AuthzWorld, key: tuple[str, str], role: Role, name: str
) -> None:
    """A session of a role the table refuses, with a valid CSRF token and real ids of its
    tenant's objects, is refused (403 or 404) and changes nothing."""
    before = authz.state()
    answer = console_send(authz, key, name)
    assert answer.status_code in (403, 404), f"{key} as {name}: {answer.status_code}"
    assert authz.state() == before, f"{key} as {name} changed the stored state"


@pytest.mark.integration
@pytest.mark.parametrize(("key", "role", "name"), list(console_cases(holders=True)))
def test_console_serves_roles_with_the_capability(
    authz: AuthzWorld, key: tuple[str, str], role: Role, name: str
) -> None:
    """A page is never refused to a role holding its capability."""
    answer = console_send(authz, key, name)
    assert answer.status_code != 403, f"{key} refused {name}: {answer.text[:300]}"


@pytest.mark.integration
def test_pages_say_what_the_table_says(authz: AuthzWorld) -> None:
    """The notes a page shows follow ``tenant_scope`` and ``may`` (no role test in templates):
    only a scoped officer is told it sees some enterprises; only the operator, which may
    manage every token, gets everyone's tokens."""
    said = {
        name: {
            path: console_send(authz, ("GET", path), name).text
            for path in ("/console/audit", "/console/providers", "/console/tokens")
        }
        for name in ("operator", "officer", "officer-scoped", "enterprise", "provider")
    }
    for name in ("operator", "officer", "officer-scoped"):
        scoped = name == "officer-scoped"
        assert ("appear only as their hashes" in said[name]["/console/audit"]) == scoped, name
        assert ("enterprise you oversee" in said[name]["/console/providers"]) == scoped, name
    for name, pages in said.items():
        everyone = name == "operator"
        assert ("You may rotate or revoke any of them" in pages["/console/tokens"]) == everyone, (
            name
        )
