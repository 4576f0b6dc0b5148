"""Security officers are read-only in the console too, except for suspension and their own
API tokens.

The console's write routes are enumerated from the app at test time and sent with
a valid session and CSRF token and real ids, so that only the role check can
refuse them; a new write route is covered without touching this file.
"""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from sandbox.runtime.veil import Veil
from sandbox.server.app import create_app
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration

#: What an officer may do in the console: leave, suspend or reinstate a provider, and rotate
#: or revoke its own API tokens (another's is "not found": tests/console/test_tokens.py).
ALLOWED = {
    "/console/logout",
    "/console/providers/{provider_id}/suspend",
    "/console/providers/{provider_id}/reinstate",
    "/console/tokens/{token_id}/revoke",
    "/console/tokens/{token_id}/rotate",
}
PUBLIC = {"/console/login"}  # no session needed: it makes one


def console_writes(veil: Veil) -> list[str]:
    return sorted(
        route.path
        for route in create_app(veil.settings, veil).routes
        if isinstance(route, APIRoute)
        and route.path.startswith("/console/")
        and route.methods & {"POST", "PUT", "PATCH", "DELETE"}
    )


@pytest.mark.parametrize("scoped", [False, True], ids=["unscoped", "scoped"])
def test_every_console_change_refuses_a_security_officer(
    veil: Veil, world: World, scoped: bool
) -> None:
    acme_id = world.acme.me()["id"]
    officer = world.operator.create_security_officer("Olivia", [acme_id] if scoped else None)
    token = world.operator.issue_token(officer["id"])
    job = world.provider.submit_job(
        world.dataset_id, "process-optimization", 0.1, [{"kind": "count"}]
    )
    ids = {
        "dataset_id": world.dataset_id,
        "grant_id": world.grant_id,
        "job_id": job["id"],
        "code_id": "code_x",
        "decision": "approve",
        "provider_id": world.provider_id,
        "contract_id": "kpi_x",
        "action": "decline",
    }
    grant_before = world.acme.get_grant(world.grant_id)
    routes = console_writes(veil)
    assert len(routes) >= 12 and set(routes) >= ALLOWED
    with httpx.Client(base_url=world.url, cookies={"veil_console": token}) as http:
        home = http.get("/console/audit")
        assert home.status_code == 200
        csrf = re.search(r'name="csrf" value="(\w+)"', home.text).group(1)  # type: ignore[union-attr]
        wrong = {}
        for path in routes:
            if path in ALLOWED | PUBLIC:
                continue
            url = re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)
            response = http.post(
                url,
                data={"csrf": csrf, "reason": "checking", "epsilon": "0.1"},
                headers={"x-csrf-token": csrf},
            )
            if response.status_code != 403 or "Not allowed" not in response.text:
                wrong[path] = response.status_code
    assert not wrong, f"console routes that did not refuse an officer: {wrong}"
    # Nothing the officer sent changed anything: its only events are its own reads.
    mine = world.operator.audit_events(actor_id=officer["id"], limit=100)
    assert all(e["action"] in ("audit.exported",) for e in mine), [e["action"] for e in mine]
    assert world.acme.get_grant(world.grant_id) == grant_before
    assert world.provider.get_job(job["id"])["status"] != "failed"  # not cancelled


def test_the_officer_may_suspend_and_reinstate_from_the_console(world: World) -> None:
    officer = world.operator.create_security_officer("Olivia", None)
    token = world.operator.issue_token(officer["id"])
    with httpx.Client(base_url=world.url, cookies={"veil_console": token}) as http:
        csrf = re.search(  # type: ignore[union-attr]
            r'name="csrf" value="(\w+)"', http.get("/console/providers").text
        ).group(1)
        for action in ("suspend", "reinstate"):
            done = http.post(
                f"/console/providers/{world.provider_id}/{action}",
                data={"csrf": csrf, "reason": "review"},
            )
            assert done.status_code in (200, 303), (action, done.status_code)
    actions = [e["action"] for e in world.operator.audit_events(actor_id=officer["id"])]
    assert "provider.suspended" in actions and "provider.reinstated" in actions
    assert world.provider.me()["status"] == "active"
