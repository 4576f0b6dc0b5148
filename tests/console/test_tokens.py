"""The API tokens page in a real browser: each principal rotates and revokes its own tokens,
the operator everyone's; a revoked token ends its console session too."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from sandbox.client import ApiError, VeilClient
from sandbox.console.session import csrf_token
from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration


def refused(world: World, token: str) -> bool:
    with VeilClient(world.url, token) as client:
        try:
            client.me()
        except ApiError as exc:
            return exc.status == 401
    return False


def test_a_provider_rotates_its_session_token_and_keeps_working(page: Page, world: World) -> None:
    old = token_of(world.provider)
    (mine,) = world.provider.list_tokens()
    acme_tokens = world.operator.list_tokens(world.acme.me()["id"])
    log_in(page, world.url, old)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API tokens").click()
    expect(page).to_have_url(re.compile(r"/console/tokens$"))
    row = page.locator(f"#token-{mine['id']}")
    expect(row).to_contain_text("this session")
    expect(row.get_by_test_id("state")).to_have_text("active")
    for theirs in acme_tokens:  # only its own tokens are listed
        expect(page.locator(f"#token-{theirs['id']}")).to_have_count(0)

    page.get_by_role("button", name=f"Rotate token {mine['id']}").click()
    secret = page.get_by_test_id("new-token").input_value()
    assert secret.startswith("veil_") and secret != old
    expect(page.get_by_role("region", name=re.compile("New token"))).to_contain_text(
        "This session now uses the new token"
    )
    assert refused(world, old)  # revoked at once
    with VeilClient(world.url, secret) as client:
        assert client.me()["role"] == "provider"
    # The session moved to the new token: pages and forms keep working.
    page.get_by_role("link", name="Catalog").click()
    expect(page).to_have_url(re.compile(r"/console/catalog$"))
    page.get_by_role("link", name="API tokens").click()
    expect(page.locator(f"#token-{mine['id']}").get_by_test_id("state")).to_contain_text("revoked")
    page.reload()
    assert page.get_by_test_id("new-token").count() == 0  # shown once


def test_the_operator_revokes_a_providers_token_and_ends_its_session(
    page: Page, browser: Browser, world: World
) -> None:
    (theirs,) = world.provider.list_tokens()
    provider_context = browser.new_context()
    try:
        provider_page = provider_context.new_page()
        log_in(provider_page, world.url, token_of(world.provider))
        expect(provider_page).to_have_url(re.compile(r"/console/catalog$"))

        log_in(page, world.url, token_of(world.operator))
        page.goto(f"{world.url}/console/tokens")
        row = page.locator(f"#token-{theirs['id']}")
        expect(row).to_contain_text("Predicta")
        row.get_by_label(f"Reason for revoking token {theirs['id']}").fill("contract ended")
        row.get_by_role("button", name=f"Revoke token {theirs['id']}").click()
        expect(page.get_by_role("status")).to_contain_text(f"Token {theirs['id']} of Predicta")
        expect(row.get_by_test_id("state")).to_contain_text("revoked")

        assert refused(world, token_of(world.provider))
        provider_page.goto(f"{world.url}/console/jobs")
        expect(provider_page).to_have_url(re.compile(r"/console/login\?next=/console/jobs$"))
    finally:
        provider_context.close()
    (event,) = world.operator.audit_events(action="token.revoked")
    assert event["actor_role"] == "operator" and event["details"]["reason"] == "contract ended"


def test_revoking_the_sessions_own_token_logs_out(page: Page, world: World) -> None:
    (mine,) = world.acme.list_tokens()
    log_in(page, world.url, token_of(world.acme))
    page.goto(f"{world.url}/console/tokens")
    page.get_by_role("button", name=f"Revoke token {mine['id']}").click()
    expect(page).to_have_url(re.compile(r"/console/login$"))
    assert refused(world, token_of(world.acme))


def test_another_principals_token_is_not_found_from_the_console(world: World) -> None:
    (theirs,) = world.operator.list_tokens(world.acme.me()["id"])
    token = token_of(world.provider)
    with httpx.Client(base_url=world.url, cookies={"veil_console": token}) as http:
        for action in ("revoke", "rotate"):
            answer = http.post(
                f"/console/tokens/{theirs['id']}/{action}", data={"csrf": csrf_token(token)}
            )
            assert answer.status_code == 404, (action, answer.text[:300])
            assert "not found" in answer.text
        page = http.get("/console/tokens")
        assert page.status_code == 200 and theirs["id"] not in page.text
    world.acme.me()  # untouched
