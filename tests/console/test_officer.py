"""The security officer's console pages in a real browser: the audit log (filters, paging,
chain status, export verified offline), the attention views, and suspending a provider."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from keys import LocalKeyServer
from keys.signing import public_keys_from_pem
from policies import audit
from policies.audit_export import verify_export
from sandbox.client import ApiError
from sandbox.console.session import csrf_token
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from tests.console.conftest import log_in, token_of
from tests.policies.chains import CHAIN_HASHES
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]
# Columns of the events table.
ACTION, OUTCOME = 4, 5


@pytest.fixture
def chain_hash() -> str:
    """The chain's hash (the tamper tests run under each: tests/policies/chains.py)."""
    return audit.SHA256


@pytest.fixture
def veil(veil: Veil, chain_hash: str) -> Veil:
    """The conftest's Veil, its audit chain switched to ``chain_hash`` early."""
    with veil.db.transaction() as session:
        assert audit.switch_chain_hash(session, chain_hash) == (chain_hash != audit.SHA256)
    return veil


@pytest.fixture
def idle_world(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[World]:
    """A world whose jobs stay queued: no worker runs them."""
    with (
        open_veil(settings_for(tmp_path, key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        yield make_world(veil, url)


def officer_token(world: World, scope: list[str] | None = None) -> str:
    created = world.operator.create_security_officer("Olivia", scope)
    return world.operator.issue_token(created["id"])


def deny_twice(world: World) -> None:
    """Two denied submissions by the provider: a purpose its grant does not name."""
    for _ in range(2):
        with pytest.raises(ApiError):
            world.provider.submit_job(world.dataset_id, "marketing", 0.1, COUNT)


def event_rows(page: Page) -> list[list[str]]:
    table = page.get_by_role("table")
    return [row.get_by_role("cell").all_inner_texts() for row in table.get_by_role("row").all()[1:]]


def seqs(page: Page) -> list[int]:
    return [int(row[0]) for row in event_rows(page)]


def test_the_audit_log_filters_pages_and_exports_a_verifiable_file(
    page: Page, world: World, tmp_path: Path
) -> None:
    deny_twice(world)
    log_in(page, world.url, officer_token(world))
    expect(page).to_have_url(re.compile(r"/console/audit$"))
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(page.locator("#chain-status")).to_contain_text("Intact")
    assert seqs(page) == sorted(seqs(page), reverse=True) and len(seqs(page)) > 10
    filter_by_keyboard(page)
    page_to_older_events_and_back(page)
    refuse_a_wrong_filter(page)
    page.goto(f"{world.url}/console/audit")
    export_and_verify_offline(page, tmp_path)


def filter_by_keyboard(page: Page) -> None:
    """The filter form by keyboard alone: Tab between fields, type, Enter submits."""
    page.get_by_label("Actor id").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Actor role")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Action")).to_be_focused()
    page.keyboard.type("job.*")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Outcome")).to_be_focused()
    page.keyboard.type("denied")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"outcome=denied"))
    rows = event_rows(page)
    assert len(rows) == 2, rows
    assert all(r[OUTCOME] == "denied" and r[ACTION] == "job.denied" for r in rows)
    expect(page.get_by_label("Action")).to_have_value("job.*")


def page_to_older_events_and_back(page: Page) -> None:
    """Ten successful events a page: the older page, then the newest again, filters kept."""
    page.get_by_label("Action").fill("")
    page.get_by_label("Outcome").select_option("ok")
    page.get_by_label("Per page").select_option("10")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"outcome=ok.*limit=10"))  # the new page, not the old
    expect(page.get_by_role("table").get_by_role("row")).to_have_count(11)  # with the header
    first = seqs(page)
    page.get_by_role("link", name="Older events").click()
    expect(page).to_have_url(re.compile(rf"before_seq={first[-1]}"))
    older = seqs(page)
    assert older and max(older) < min(first)
    assert all(r[OUTCOME] == "ok" for r in event_rows(page))
    expect(page.get_by_label("Outcome")).to_have_value("ok")
    page.get_by_role("link", name="Newest events").click()
    expect(page).not_to_have_url(re.compile(r"before_seq="))
    assert seqs(page) == first


def refuse_a_wrong_filter(page: Page) -> None:
    """Refused next to the form, in plain words, keeping what was typed."""
    page.get_by_label("Since").fill("2030-01-02T00:00")
    page.get_by_label("Until").fill("2030-01-01T00:00")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("alert")).to_contain_text("since must be before until")
    expect(page.get_by_label("Since")).to_have_value("2030-01-02T00:00")


def export_and_verify_offline(page: Page, tmp_path: Path) -> None:
    """The whole log and the public key, downloaded from the page, verify offline."""
    with page.expect_download() as exported:
        page.get_by_role("button", name="Download the export").click()
    with page.expect_download() as key:
        page.get_by_role("link", name="Download the public key (PEM)").click()
    export_file, key_file = tmp_path / "audit.jsonl", tmp_path / "key.pem"
    exported.value.save_as(export_file)
    key.value.save_as(key_file)
    assert exported.value.suggested_filename.endswith(".jsonl")
    report = verify_export(
        export_file.read_bytes().splitlines(), public_keys_from_pem(key_file.read_text())
    )
    assert report.ok, report.problem
    assert report.from_seq == 1 and report.events > 10
    # A range in the wrong order is refused next to the export form.
    page.get_by_label("From event").fill("9")
    page.get_by_label("To event").fill("3")
    page.get_by_role("button", name="Download the export").click()
    expect(page.get_by_role("alert")).to_contain_text("'from event' must not come after 'to event'")
    expect(page.get_by_label("From event")).to_have_value("9")


def test_attention_shows_denials_and_a_provider_is_suspended_and_reinstated(
    page: Page, idle_world: World
) -> None:
    world = idle_world
    deny_twice(world)
    queued = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    log_in(page, world.url, officer_token(world))
    page.get_by_role("link", name="Attention").click()
    see_the_denials(page, world.url)
    page.get_by_role("link", name="Providers").click()
    expect(page.get_by_role("row").filter(has_text="Other Analytics")).to_be_visible()
    suspend_predicta(page, world, queued["id"])
    reinstate_predicta(page, world)
    changes = [
        (e["action"], e["details"]["reason"])
        for e in world.operator.audit_events(resource=f"principal:{world.provider_id}")
        if e["action"] in {"provider.suspended", "provider.reinstated"}
    ]
    assert changes == [
        ("provider.reinstated", "cleared by the review"),
        ("provider.suspended", "exfiltration suspected"),
    ]


def see_the_denials(page: Page, url: str) -> None:
    """Both charts, the provider's count and reason, and the period selector."""
    expect(page.get_by_role("img", name="Denied attempts per provider")).to_be_visible()
    expect(page.get_by_role("img", name="Denied attempts per day (UTC)")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="Predicta").first
    expect(row).to_contain_text("2")
    expect(row).to_contain_text("purpose")
    page.get_by_label("Since").select_option("30d")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"since=30d"))
    expect(page.get_by_label("Since")).to_have_value("30d")
    page.goto(f"{url}/console/attention?since=yesterday")
    expect(page.get_by_role("alert")).to_contain_text("choose a period from the list")


def suspend_predicta(page: Page, world: World, queued_id: str) -> None:
    """A blank reason is refused next to the form; then the suspension and what it did."""
    predicta = page.get_by_role("row").filter(has_text="Predicta")
    expect(predicta.get_by_role("cell").first).to_have_text("active")
    page.get_by_label("Reason for suspending Predicta").fill("   ")
    page.get_by_role("button", name="Suspend Predicta").click()
    expect(predicta.get_by_role("alert")).to_contain_text("say why")
    expect(page.get_by_label("Reason for suspending Predicta")).to_have_attribute(
        "aria-invalid", "true"
    )
    assert world.provider.me()["id"] == world.provider_id

    page.get_by_label("Reason for suspending Predicta").fill("exfiltration suspected")
    page.get_by_role("button", name="Suspend Predicta").click()
    expect(page.get_by_role("status")).to_contain_text("Predicta is suspended")
    expect(page.get_by_role("status")).to_contain_text(f"Queued jobs cancelled: {queued_id}.")
    expect(predicta.get_by_role("cell").first).to_have_text("suspended")
    with pytest.raises(ApiError) as refused:
        world.provider.me()
    assert refused.value.status == 401
    page.reload()
    expect(page.get_by_role("status")).to_have_count(0)  # the notice is shown once


def reinstate_predicta(page: Page, world: World) -> None:
    page.get_by_label("Reason for reinstating Predicta").fill("cleared by the review")
    page.get_by_role("button", name="Reinstate Predicta").click()
    expect(page.get_by_role("status")).to_contain_text("Predicta is active again")
    predicta = page.get_by_role("row").filter(has_text="Predicta")
    expect(predicta.get_by_role("cell").first).to_have_text("active")
    assert world.provider.me()["id"] == world.provider_id


def test_a_scoped_officer_sees_only_its_enterprises(page: Page, world: World) -> None:
    acme = world.acme.me()
    log_in(page, world.url, officer_token(world, [acme["id"]]))
    enterprises = {row[3] for row in event_rows(page)}
    assert enterprises == {acme["name"]}
    tenant = page.get_by_label("Enterprise")
    expect(tenant.get_by_role("option")).to_have_count(2)  # any, and Acme
    page.get_by_role("link", name="Attention").click()
    expect(page.get_by_role("main")).to_contain_text("not shown to officers with a scope")
    page.get_by_role("link", name="Providers").click()
    expect(page.get_by_role("row").filter(has_text="Predicta")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="Other Analytics")).to_have_count(0)


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_a_broken_chain_is_shown_in_plain_words(page: Page, world: World, veil: Veil) -> None:
    token = officer_token(world)
    world.operator.checkpoint()
    with sqlite3.connect(veil.settings.data_dir / "veil.db") as db:
        db.execute("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
    log_in(page, world.url, token)
    status = page.locator("#chain-status")
    expect(status).to_contain_text("BROKEN at event 2")
    expect(status).to_contain_text("event 2 was altered or moved")
    page.get_by_role("button", name="Download the export").click()
    expect(page.get_by_role("alert").last).to_contain_text("the audit chain is broken at event 2")
    expect(page.locator("#export-error")).to_be_focused()  # brought into view, for keyboards


def test_after_a_recorded_full_verification_the_page_reads_only_newer_events(
    page: Page, world: World
) -> None:
    token = officer_token(world)
    world.operator.checkpoint()
    recorded = world.operator.record_audit_verification()
    assert recorded["ok"]
    anchor = world.operator.verify_audit()["verified_from_seq"]
    assert anchor > 0
    log_in(page, world.url, token)
    expect(page.locator("#chain-status")).to_contain_text("Intact")
    expect(page.locator("#chain-routine")).to_contain_text(
        f"from the signed checkpoint at event {anchor:,} on"
    )


def test_operators_see_the_pages_and_other_roles_are_refused(world: World) -> None:
    def console(token: str) -> httpx.Client:
        return httpx.Client(base_url=world.url, cookies={"veil_console": token})

    with console(token_of(world.operator)) as operator:
        for path in ("/console/audit", "/console/attention", "/console/providers"):
            assert operator.get(path).status_code == 200, path
        assert "Other Analytics" in operator.get("/console/providers").text
    for client in (world.acme, world.provider):
        token = token_of(client)
        with console(token) as other:
            for path in ("/console/audit", "/console/attention", "/console/providers"):
                refused = other.get(path)
                assert refused.status_code == 403 and "Not allowed" in refused.text, path
            assert other.get("/console/audit/export").status_code == 403
            suspend = other.post(
                f"/console/providers/{world.provider_id}/suspend",
                data={"csrf": csrf_token(token), "reason": "no"},
            )
            assert suspend.status_code == 403 and "principals may do this" in suspend.text
    assert world.provider.me()["id"] == world.provider_id
