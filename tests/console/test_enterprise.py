"""The enterprise's console pages in a real browser: upload and classify, grant, narrow,
revoke, approve code, issue a receipt; errors next to their forms; the keyboard.

The pending code request is written straight into the database: submitting one runs
the function on the mock in PySyft (about 10 s), which ``tests/sandbox`` covers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from analytics.syft_code import source_sha256
from policies.db import new_id
from sandbox.api.routes_receipts import PAGE_POLICY
from sandbox.demo.data import DECLARATION, production_log
from sandbox.oversight.receipt_format import verify_receipt
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, CodeStatus
from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import PURPOSE, World

pytestmark = pytest.mark.integration

SHOTS = os.environ.get("VEIL_CONSOLE_SHOTS")  # a folder: save a screenshot of each page
SOURCE = """import syft as sy


@sy.syft_function_single_use(data=asset)
def mean_temperature(data):
    return float(data["temperature_c"].mean())
"""


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"enterprise-{name}.png"), full_page=True)


def card(page: Page, heading: str | re.Pattern[str]) -> Locator:
    """The section (a named region) whose heading says ``heading``."""
    return page.get_by_role("region", name=heading)


def notice(page: Page) -> Locator:
    return page.locator("p.notice")


def declare_bounds(form: Locator) -> None:
    """Type each column's bounds and categories, as an owner must (none are suggested)."""
    for column in DECLARATION["columns"]:
        name = column["name"]
        if "categories" in column:
            form.get_by_label(f"Categories of {name}").fill(", ".join(column["categories"]))
        if "lower" in column:
            form.get_by_label(f"Lowest value of {name}").fill(str(column["lower"]))
            form.get_by_label(f"Highest value of {name}").fill(str(column["upper"]))


def upload_form(page: Page, url: str, csv: Path, name: str) -> Locator:
    """Open the datasets page, name the dataset, choose the file; wait for its columns."""
    page.goto(f"{url}/console/datasets")
    form = page.get_by_role("form", name="New dataset")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("CSV or Parquet file").set_input_files(str(csv))
    expect(form.get_by_label("Class of machine")).to_be_visible()
    return form


def pending_code(veil: Veil, world: World) -> str:
    """A pending code request on Acme's dataset, as submission would leave it."""
    dataset = world.acme.get_dataset(world.dataset_id)
    code_id = new_id("code")
    with veil.db.transaction() as session:
        session.add(
            CodeRequest(
                id=code_id,
                provider_id=world.provider_id,
                enterprise_id=dataset["enterprise_id"],
                dataset_id=world.dataset_id,
                purpose=PURPOSE,
                function_name="mean_temperature",
                source=SOURCE,
                sha256=source_sha256(SOURCE),
                columns=["temperature_c"],
                status=CodeStatus.PENDING,
                mock_output={"value": 61.25, "checks": {"status": "pass", "reasons": []}},
                created_at=veil.clock(),
            )
        )
    return code_id


def test_enterprise_flow(page: Page, world: World, veil: Veil, tmp_path: Path) -> None:
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, [{"kind": "count"}])
    log_in(page, world.url, token_of(world.acme))

    # Upload a new dataset: the detected types are shown, the classes chosen.
    csv = tmp_path / "line-2.csv"
    csv.write_bytes(production_log(300, seed=5))
    form = upload_form(page, world.url, csv, "line-2-log")
    expect(form.get_by_role("group", name="temperature_c detected: float")).to_be_visible()
    expect(form.get_by_role("group", name="failure_24h detected: boolean")).to_be_visible()
    # Classes come from names, the stricter when unknown; nothing is taken from the data.
    expect(form.get_by_label("Class of machine")).to_have_value("public")
    expect(form.get_by_label("Class of recipe_p1")).to_have_value("secret")
    expect(form.get_by_label("Class of yield_pct")).to_have_value("confidential")
    expect(form.get_by_label("Categories of machine")).to_have_value("")
    expect(form.get_by_label("Lowest value of temperature_c")).to_have_value("")
    declare_bounds(form)
    form.get_by_label("Data domain of recipe_p1").select_option("production")
    for column in ("defects", "yield_pct", "failure_24h"):
        form.get_by_label(f"Class of {column}").select_option("confidential")
    shot(page, "upload")
    form.get_by_role("button", name="Upload dataset").click()
    expect(notice(page)).to_contain_text("first version stored")
    section = card(page, "line-2-log")
    expect(section.get_by_role("cell", name="300", exact=True)).to_be_visible()
    shot(page, "datasets")
    section.get_by_label("New version of line-2-log").set_input_files(str(csv))
    section.get_by_role("button", name="Upload version").click()
    expect(notice(page)).to_contain_text("new version was stored")
    expect(section.get_by_role("cell", name="2 (latest)")).to_be_visible()
    created = next(d for d in world.acme.list_datasets() if d["name"] == "line-2-log")
    classes = {c["name"]: c["class"] for c in created["columns"]}
    assert classes["recipe_p1"] == "secret" and classes["machine"] == "public"
    national = {c["name"]: c for c in world.acme.classification(created["id"])["columns"]}
    assert national["recipe_p1"]["domain"] == "production"
    assert national["recipe_p1"]["level"] == "important"
    # The national classification: yield marked important data, then the catalogue.
    section = card(page, "line-2-log")
    section.get_by_text("Data domain and level of line-2-log's columns").click()
    section.get_by_label("Level of yield_pct").select_option("important")
    section.get_by_label("Data domain of yield_pct").select_option("management")
    section.get_by_role("button", name="Save the classification").click()
    expect(notice(page)).to_contain_text("classification was saved")
    section = card(page, "line-2-log")
    section.get_by_text("Columns (9)").click()
    expect(
        section.get_by_role("row", name=re.compile("yield_pct.*管理数据域.*重要数据"))
    ).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="download JSON").click()
    listed = json.loads(Path(download.value.path()).read_text())
    assert {(e["dataset"], e["column"]) for e in listed["entries"]} >= {
        ("line-2-log", "recipe_p1"),
        ("line-2-log", "yield_pct"),
    }
    assert created["latest_version"]["version"] == 2
    assert created["latest_version"]["row_count"] == 300

    # Grant it to the provider; then narrow the grant with a reason, and revoke it.
    assert world.provider.wait_for_job(job["id"], timeout=60)["status"] == "released"
    page.get_by_role("link", name="Grants").click()
    new = page.get_by_role("form", name="New grant")
    new.get_by_label("Provider").select_option(label="Predicta")
    new.get_by_label("line-2-log").check()
    for column in ("machine", "temperature_c", "defects"):
        new.get_by_label(re.compile(f"^{column} ")).check()
    new.get_by_label("3 private queries (DP)").check()
    new.get_by_label("Purposes").fill("quality-analysis")
    new.get_by_label("ε budget").fill("2")
    new.get_by_role("button", name="Create grant").click()
    expect(notice(page)).to_contain_text("grant was created")
    grant = card(page, re.compile("Predicta · line-2-log"))
    expect(grant).to_contain_text("ε 0 of 2 spent")
    expect(card(page, re.compile("Predicta · production-log"))).to_contain_text(
        "ε 0.25 of 1 spent (25.0%)"
    )
    expect(page.locator("figure svg.chart polyline")).to_have_count(2)  # every grant, spent or not
    shot(page, "grants")

    grant.get_by_text("Narrow or extend this grant").click()
    grant.get_by_label("defects").uncheck()
    grant.get_by_label("ε budget").fill("1.5")
    grant.get_by_label("Reason for the change").fill("Defect counts are not needed")
    grant.get_by_role("button", name="Save changes").click()
    expect(notice(page)).to_contain_text("grant was changed")
    expect(grant).to_contain_text("ε 0 of 1.5 spent")
    expect(grant.locator("dl")).not_to_contain_text("defects")
    grant.get_by_label("Reason for revoking").fill("The pilot ended")
    grant.get_by_role("button", name="Revoke grant").click()
    expect(notice(page)).to_contain_text("grant was revoked")
    expect(grant.locator(".badge")).to_have_text("revoked")
    mine = [g for g in world.acme.list_grants() if created["id"] in g["dataset_ids"]]
    assert mine[0]["columns"] == ["machine", "temperature_c"] and mine[0]["revoked_at"]

    # Approve a pending code request, with a reason.
    code_id = pending_code(veil, world)
    page.get_by_role("link", name="Code approvals").click()
    request = card(page, re.compile("mean_temperature from Predicta"))
    expect(request.locator("pre").first).to_contain_text('data["temperature_c"].mean()')
    expect(request).to_contain_text("temperature_c (internal)")
    expect(request).to_contain_text("61.25")
    shot(page, "code")
    request.get_by_label(re.compile("Reason for your decision")).fill("Only a mean; fine")
    request.get_by_role("button", name="Approve").click()
    expect(notice(page)).to_contain_text("code was approved")
    assert world.provider.get_code(code_id)["status"] == "approved"

    # A receipt for the provider: its summary, the signed JSON, its own page.
    page.get_by_role("link", name="Usage receipts").click()
    page.get_by_label("Provider").select_option(label="Predicta")
    page.get_by_role("button", name="Issue receipt").click()
    summary = card(page, "Receipt for Predicta")
    expect(summary).to_contain_text("1 jobs")
    expect(summary).to_contain_text("0.25 ε spent")
    shot(page, "receipts")
    with page.expect_download() as download:
        summary.get_by_role("link", name="Download the signed JSON").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    verify_receipt(receipt, veil.keys.signing_public_keys())
    assert receipt["provider"]["id"] == world.provider_id and receipt["totals"]["jobs"] == 1
    href = summary.get_by_role("link", name="Open the receipt page").get_attribute("href")
    response = page.request.get(f"{world.url}{href}")
    assert response.ok and response.headers["content-security-policy"] == PAGE_POLICY
    assert "signed-receipt" in response.text()


def test_errors_are_shown_next_to_their_forms(page: Page, world: World, tmp_path: Path) -> None:
    log_in(page, world.url, token_of(world.acme))
    csv = tmp_path / "log.csv"
    csv.write_bytes(production_log(200, seed=3))
    form = upload_form(page, world.url, csv, "too-narrow")
    declare_bounds(form)
    form.get_by_label("Lowest value of temperature_c").fill("20")
    form.get_by_label("Highest value of temperature_c").fill("50")
    form.get_by_role("button", name="Upload dataset").click()
    alert = form.get_by_role("alert")
    expect(alert).to_contain_text("The file cannot be used as it is", ignore_case=True)
    expect(alert).to_contain_text(
        re.compile(r"column temperature_c, rows [\d, ]+ and \d+ more: expected a number between 20")
    )
    expect(form.get_by_label("Name", exact=True)).to_have_value("too-narrow")  # kept
    shot(page, "upload-error")
    assert all(d["name"] != "too-narrow" for d in world.acme.list_datasets())  # nothing made
    # A plain (script-less) multipart post is refused before its body is read.
    files = {"file": {"name": "log.csv", "mimeType": "text/csv", "buffer": csv.read_bytes()}}
    refused = page.request.post(f"{world.url}/console/datasets", multipart=files)
    assert refused.status == 403 and "works with the page" in refused.text()

    # Not a CSV at all: said at once, next to the file.
    bad = tmp_path / "notes.csv"
    bad.write_bytes(b"\xff\xfe\x00binary")
    form.get_by_label("CSV or Parquet file").set_input_files(str(bad))
    expect(page.locator("#detected-columns").get_by_role("alert")).to_contain_text("UTF-8")
    existing = card(page, "production-log-2026")
    existing.get_by_label("New version of production-log-2026").set_input_files(str(bad))
    existing.get_by_role("button", name="Upload version").click()
    expect(existing.get_by_role("alert")).to_contain_text("UTF-8 text")

    page.goto(f"{world.url}/console/grants")
    new = page.get_by_role("form", name="New grant")
    new.get_by_label("Provider").select_option(label="Predicta")
    new.get_by_label("production-log-2026").check()
    new.get_by_label(re.compile("^machine ")).check()
    new.get_by_label("0 catalog").check()
    new.get_by_label("Purposes").fill("maintenance")
    new.get_by_label("ε budget").fill("500")
    new.get_by_role("button", name="Create grant").click()
    new = page.get_by_role("form", name="New grant")
    expect(new.get_by_role("alert")).to_contain_text("epsilon must be a number between 0 and 100")
    expect(new.get_by_label("Purposes")).to_have_value("maintenance")
    expect(new.get_by_label("production-log-2026")).to_be_checked()

    existing = card(page, re.compile("Predicta · production-log"))
    existing.get_by_text("Narrow or extend this grant").click()
    existing.get_by_label("Reason for the change").fill("Tidying up")
    existing.get_by_role("button", name="Save changes").click()
    existing = card(page, re.compile("Predicta · production-log"))
    expect(existing.get_by_role("alert")).to_contain_text("nothing to change")
    expect(existing.get_by_label("Reason for the change")).to_have_value("Tidying up")
    shot(page, "grant-error")


def test_a_grant_can_be_made_with_the_keyboard_alone(page: Page, world: World) -> None:
    log_in(page, world.url, token_of(world.acme))
    page.goto(f"{world.url}/console/grants")
    new = page.get_by_role("form", name="New grant")
    new.get_by_label("Provider").focus()
    page.keyboard.type("Other")  # type-ahead picks the option
    expect(new.get_by_label("Provider")).not_to_have_value("")
    for target in (
        new.get_by_label("production-log-2026"),
        new.get_by_label(re.compile("^shift ")),
        new.get_by_label(re.compile("^cycle_time_s ")),
        new.get_by_label("2 aggregates (SDC-checked)"),
    ):
        tab_to(page, target)
        page.keyboard.press("Space")
        expect(target).to_be_checked()
    tab_to(page, new.get_by_label("Purposes"))
    page.keyboard.type("production-scheduling")
    tab_to(page, new.get_by_label("ε budget"))
    page.keyboard.press("Control+A")
    page.keyboard.type("0.5")
    page.keyboard.press("Enter")
    expect(notice(page)).to_contain_text("grant was created")
    other = [g for g in world.acme.list_grants() if g["purposes"] == ["production-scheduling"]]
    assert other and other[0]["columns"] == ["cycle_time_s", "shift"] and other[0]["tiers"] == [2]
    assert other[0]["provider_id"] != world.provider_id  # "Other Analytics", not "Predicta"


def tab_to(page: Page, target: Locator, limit: int = 80) -> None:
    """Press Tab until ``target`` has the focus (it must be reachable, forward, by keyboard)."""
    for _ in range(limit):
        if target.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")
