"""The provider's pages in a real browser: catalog and mock data, a private query with its
accuracy preview, the job's progress and released result, jobs per day, refusals, keyboard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from keys import LocalKeyServer
from sandbox.demo.data import DECLARATION
from sandbox.jobs.runner import claim_next_job, run_job
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

HEADER = ",".join(c["name"] for c in DECLARATION["columns"])
NAME = DECLARATION["name"]


@pytest.fixture
def veil(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[Veil]:
    """Veil without its job worker: the tests run each job when they want to see it queued."""
    with open_veil(settings_for(tmp_path, key_server), worker=False) as running:
        yield running


@pytest.fixture
def world(veil: Veil) -> Iterator[World]:
    """The sandbox world, with mock data (tier 1) granted besides private queries (tier 3)."""
    with ApiThread(veil.settings, veil) as url:
        yield make_world(veil, url, tiers=[1, 3])


def run_queued_job(veil: Veil) -> None:
    """What the worker does: claim the oldest queued job and run it to its end."""
    job_id = claim_next_job(veil)
    assert job_id is not None
    run_job(veil, job_id)


def spent(world: World) -> float:
    return float(world.provider.get_grant(world.grant_id)["budget"]["epsilon_spent"])


def test_catalog_query_preview_run_result_and_jobs(page: Page, veil: Veil, world: World) -> None:
    log_in(page, world.url, token_of(world.provider))
    expect(page).to_have_url(re.compile(r"/console/catalog$"))
    dataset = page.get_by_role("region", name=NAME)
    expect(dataset).to_contain_text("about 2,000 (rounded)")
    expect(dataset.get_by_role("row", name="yield_pct")).to_contain_text("confidential")
    expect(dataset.get_by_role("meter")).to_have_attribute("value", "0.0")
    expect(dataset).to_contain_text("0 spent of 1, 1 left")

    with page.expect_download() as download:
        dataset.get_by_role("link", name=re.compile(r"Download 1,000 mock rows")).click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 1001
    mock = page.request.get(f"{world.url}/console/catalog/{world.dataset_id}/mock.csv?rows=3")
    assert mock.ok and mock.headers["content-type"].startswith("text/csv")
    assert mock.text().splitlines()[0] == HEADER
    page.screenshot(path="/tmp/provider-catalog.png", full_page=True)

    page.get_by_role("link", name="New query").click()
    page.get_by_label("Statistic 1: kind").select_option("count")
    page.get_by_label("Statistic 2: kind").select_option("mean")
    page.get_by_label("Statistic 2: of").select_option("temperature_c")
    page.get_by_label("shift").check()
    page.get_by_label("Epsilon (ε) to spend").fill("0.5")
    page.get_by_role("button", name="Preview accuracy").click()
    preview = page.get_by_role("region", name="Accuracy preview")
    expect(preview).to_contain_text("would spend ε 0.5")
    expect(preview.get_by_role("row", name=re.compile(r"^count "))).to_contain_text(
        "with 95% confidence"
    )
    expect(preview.get_by_role("row", name="mean(temperature_c)")).to_be_visible()
    expect(preview).to_be_focused()
    assert spent(world) == 0  # a preview spends nothing
    expect(page.get_by_label("Statistic 2: of")).to_have_value("temperature_c")
    expect(page.get_by_label("shift")).to_be_checked()
    page.screenshot(path="/tmp/provider-query.png", full_page=True)

    page.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/console/jobs/job_\w+$"))
    job_id = page.url.rsplit("/", 1)[1]
    progress = page.get_by_role("list", name="Progress")
    expect(progress).to_contain_text("budget debited")
    expect(progress).to_contain_text("Waiting for a sandbox")
    expect(page.get_by_role("progressbar", name="Job in progress")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_be_visible()
    assert spent(world) == 0.5  # debited at submission, before any data is read
    page.screenshot(path="/tmp/provider-job-queued.png", full_page=True)
    run_queued_job(veil)
    result = page.get_by_role("region", name="Result")
    expect(result).to_be_visible(timeout=30_000)  # the page refreshes itself until then
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.get_by_role("list", name="Progress")).to_contain_text("released")
    for shift in ("early", "late", "night"):
        rows = result.get_by_role("row").filter(has_text=shift)
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("with 95% confidence, the true value is between")
    expect(result).to_contain_text(re.compile(r"SHA-256\s*[0-9a-f]{64}"))
    expect(page.get_by_role("region", name="Remaining budget")).to_contain_text("0.5 left")
    page.screenshot(path="/tmp/provider-job.png", full_page=True)

    page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.get_by_role("row", name=job_id)
    expect(row).to_contain_text("released")
    expect(row).to_contain_text(NAME)
    expect(page.get_by_role("img", name="Jobs per day")).to_be_visible()
    page.screenshot(path="/tmp/provider-jobs.png", full_page=True)


def test_refusals_are_shown_next_to_the_form_and_it_works_by_keyboard(
    page: Page, world: World
) -> None:
    log_in(page, world.url, token_of(world.provider))
    page.goto(f"{world.url}/console/query")
    page.get_by_label("Statistic 2: kind").focus()
    page.keyboard.type("mea")  # type-ahead in a closed select
    page.keyboard.press("Tab")
    page.keyboard.type("temp")
    expect(page.get_by_label("Statistic 2: of")).to_have_value("temperature_c")
    page.get_by_label("shift").focus()
    page.keyboard.press("Space")
    expect(page.get_by_label("shift")).to_be_checked()
    page.get_by_label("Epsilon (ε) to spend").focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("5")
    page.keyboard.press("Enter")  # the form's first button: the preview, which spends nothing

    form = page.locator("#query-form")
    alert = form.get_by_role("alert")
    expect(alert).to_contain_text("This query would be refused")
    expect(alert.get_by_role("listitem")).to_contain_text(
        "budget short: this job needs epsilon 5 and delta 0; the grant has epsilon 1"
    )
    expect(page.get_by_label("Epsilon (ε) to spend")).to_have_value("5")
    page.keyboard.press("Tab")  # from the refusal, which has the focus, to the buttons
    expect(page.get_by_role("button", name="Preview accuracy")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Run

    expect(alert).to_contain_text("Refused by the policy; nothing was spent")
    expect(alert.get_by_role("listitem")).to_contain_text("budget short")
    expect(page.get_by_label("Statistic 2: of")).to_have_value("temperature_c")
    assert spent(world) == 0
    page.screenshot(path="/tmp/provider-denied.png", full_page=True)

    page.get_by_label("Epsilon (ε) to spend").fill("0.2")
    page.get_by_label("Statistic 1: kind").select_option("quantile")
    page.get_by_label("Statistic 1: of").select_option("cycle_time_s")
    page.get_by_role("button", name="Run").click()
    expect(alert).to_contain_text("statistic 1 (quantile): q must be")
    assert spent(world) == 0

    page.get_by_label("Statistic 1: kind").select_option("count")
    page.get_by_role("button", name="Run").click()
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_role("status").first).to_contain_text("The job was cancelled")
    expect(page.get_by_role("list", name="Progress")).to_contain_text("Failed: cancelled")
    assert spent(world) == 0.2  # a cancelled job's budget stays spent

    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("row").filter(has_text="denied")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="failed")).to_have_count(1)


def test_every_kind_of_statistic_renders_and_others_see_nothing(veil: Veil, world: World) -> None:
    with httpx.Client(
        base_url=world.url, cookies={"veil_console": token_of(world.provider)}
    ) as http:
        csrf = re.search(r'name="csrf" value="(\w+)"', http.get("/console/query").text)
        assert csrf is not None
        form = {
            "csrf": csrf.group(1),
            "dataset_id": world.dataset_id,
            "purpose": PURPOSE,
            "kind": ["quantile", "histogram", "median"],
            "column": ["cycle_time_s", "temperature_c", "defects"],
            "q": ["0.9", "", ""],
            "bins": ["", "5", ""],
            "group_by": ["machine"],
            "epsilon": "0.3",
            "delta": "0",
        }
        preview = http.post("/console/query/preview", data=form)
        assert preview.status_code == 200, preview.text
        assert "quantile(cycle_time_s, 0.9)" in preview.text and "histogram(" in preview.text
        run = http.post("/console/query", data=form)
        assert run.status_code == 303, run.text
        job_path = run.headers["location"]
        run_queued_job(veil)
        job = http.get(job_path)
        assert job.status_code == 200 and "released" in job.text
        assert job.text.count("with 95% confidence, the true value is between") >= 6 * 3
        assert http.post(job_path + "/cancel", data={"csrf": csrf.group(1)}).status_code == 409
        assert http.post("/console/query", data=form | {"csrf": "0" * 64}).status_code == 403
        other_tenant = http.get(f"/console/catalog/{world.globex_dataset_id}/mock.csv")
        assert other_tenant.status_code == 404
    with httpx.Client(
        base_url=world.url, cookies={"veil_console": token_of(world.other_provider)}
    ) as http:
        other_provider = http.get(job_path)
        assert (
            other_provider.status_code == 404 and "with 95% confidence" not in other_provider.text
        )
    with httpx.Client(base_url=world.url, cookies={"veil_console": token_of(world.acme)}) as http:
        assert http.get("/console/catalog").status_code == 403
        assert http.get(job_path).status_code == 403
