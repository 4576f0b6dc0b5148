"""The console's session: login by token, httpOnly same-site cookie, CSRF, logout, local assets."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration


def test_login_sets_a_protected_cookie_and_logout_clears_it(page: Page, world: World) -> None:
    log_in(page, world.url, token_of(world.acme))
    expect(page).to_have_url(re.compile(r"/console/datasets$"))
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("Grants")
    cookie = next(c for c in page.context.cookies() if c["name"] == "veil_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))
    assert not [c for c in page.context.cookies() if c["name"] == "veil_console"]
    page.goto(f"{world.url}/console/grants")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/grants$"))


def test_a_wrong_token_is_shown_next_to_the_field_and_audited(page: Page, world: World) -> None:
    log_in(page, world.url, "veil_not-a-real-token")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("That token does not work")
    expect(page.get_by_label("API token")).to_have_attribute("aria-invalid", "true")
    failed = world.operator.audit_events(action="auth.failed", resource="POST /console/login")
    assert failed


def test_changes_without_the_csrf_token_are_refused(world: World) -> None:
    token = token_of(world.acme)
    with httpx.Client(base_url=world.url, cookies={"veil_console": token}) as http:
        page = http.get("/console/datasets")
        assert page.status_code == 200
        forged = http.post("/console/logout", data={"csrf": "0" * 64})
        assert forged.status_code == 403 and "did not come from this session" in forged.text
        missing = http.post("/console/logout")
        assert missing.status_code == 403
        other_site = http.post(
            "/console/logout",
            data={"csrf": re.search(r'name="csrf" value="(\w+)"', page.text).group(1)},  # type: ignore[union-attr]
            headers={"origin": "http://evil.example"},
        )
        assert other_site.status_code == 403


def test_every_asset_is_served_locally_under_a_strict_policy(page: Page, world: World) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    log_in(page, world.url, token_of(world.acme))
    assert requested and all(u.startswith(world.url) for u in requested), requested
    response = page.goto(f"{world.url}/console/datasets")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
