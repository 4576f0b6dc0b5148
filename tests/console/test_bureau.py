"""The bureau's console pages in a real browser: the programme's tables, one breakdown at
a time, suppressed cells shown as such, the CSV and XLSX downloads, and the pages in
Chinese (docs/programme.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect

from keys import LocalKeyServer
from sandbox.client import VeilClient
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from tests.console.conftest import log_in, zh_log_in
from tests.console.test_language import check_chinese
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration


@dataclass
class City:
    url: str
    bureau: str  # its token
    enterprise: str  # one enterprise's token
    operator: str  # its token


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer) -> Iterator[City]:
    """Six machinery enterprises in the north and one optics enterprise on the island."""
    settings = settings_for(tmp_path_factory.mktemp("bureau-console"), key_server)
    with open_veil(settings, worker=False) as veil, ApiThread(veil.settings, veil) as url:
        token = bootstrap_operator(veil)
        assert token is not None
        with VeilClient(url, token) as operator:
            made = [
                operator.create_enterprise(
                    f"Factory {i}",
                    f"c{i}-{uuid.uuid4().hex[:6]}",
                    industry="machinery" if i < 6 else "optics",
                    district="north" if i < 6 else "island",
                    size_band="small",
                )
                for i in range(7)
            ]
            bureau = operator.create_bureau("Industry Bureau")
            bureau_token = operator.issue_token(bureau["id"])
            yield City(url, bureau_token, operator.issue_token(made[0]["id"]), token)


def cells(page: Page, group: str) -> list[str]:
    row = page.locator("#programme-table tbody tr", has=page.get_by_role("rowheader", name=group))
    return row.get_by_role("cell").all_inner_texts()


def test_the_bureau_reads_each_table_by_one_category(page: Page, city: City) -> None:
    log_in(page, city.url, city.bureau)
    expect(page).to_have_url(f"{city.url}/console/programme")
    expect(page.get_by_role("heading", level=1)).to_have_text("The programme: Participation")
    expect(page.locator("#rule")).to_contain_text("at least 5 enterprises")
    page.get_by_role("link", name="Industry", exact=True).click()
    expect(page).to_have_url(f"{city.url}/console/programme?table=participation&by=industry")
    assert cells(page, "optics") == ["suppressed"] * 4  # alone in its industry: never 0
    enrolled = int(cells(page, "machinery")[0])
    assert 5 <= enrolled <= 8
    hidden = page.locator("#programme-table td[data-suppressed=true]")
    # Optics; then machinery and the total: no datasets, grants or nodes in this city yet.
    expect(hidden).to_have_count(4 + 3 + 3)
    # The outcome verdicts: none released in this city yet, every figure suppressed.
    page.get_by_role("link", name="Outcome verdicts").click()
    expect(page).to_have_url(f"{city.url}/console/programme?table=verdicts&by=industry")
    expect(page.locator("#programme-table thead")).to_contain_text("KPI verdicts released")
    assert cells(page, "optics")[-5:] == ["suppressed"] * 5
    # The equipment online rate: no machine sources in this city yet, all suppressed.
    page.get_by_role("link", name="Equipment online rate").click()
    expect(page).to_have_url(f"{city.url}/console/programme?table=equipment&by=industry")
    expect(page.locator("#equipment-rule")).to_contain_text("both as released")
    assert cells(page, "optics")[-4:] == ["suppressed"] * 4
    # Another table keeps the breakdown.
    page.get_by_role("link", name="Data coverage").click()
    expect(page).to_have_url(f"{city.url}/console/programme?table=coverage&by=industry")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename == "programme-coverage-industry.csv"
    with page.expect_download() as download:
        page.get_by_role("link", name="XLSX").click()
    assert download.value.suggested_filename == "programme-coverage-industry.xlsx"


def test_an_unknown_breakdown_is_a_page_saying_what_is_allowed(page: Page, city: City) -> None:
    log_in(page, city.url, city.bureau)
    response = page.goto(f"{city.url}/console/programme?table=participation&by=enterprise")
    assert response is not None and response.status == 422
    expect(page.get_by_role("main")).to_contain_text("industry, district, size_band")


def test_other_roles_do_not_see_the_programme(page: Page, city: City) -> None:
    log_in(page, city.url, city.enterprise)
    expect(page.get_by_role("link", name="Programme")).to_have_count(0)
    response = page.goto(f"{city.url}/console/programme")
    assert response is not None and response.status == 403


def test_the_operators_bureau_page_shows_the_one_bureau_and_refuses_a_second(
    page: Page, city: City
) -> None:
    log_in(page, city.url, city.operator)
    page.get_by_role("link", name="Industry bureau").click()
    expect(page).to_have_url(f"{city.url}/console/operator/bureau")
    expect(page.locator("table.principals")).to_contain_text("Industry Bureau")
    expect(page.locator("form[action='/console/operator/bureau']")).to_have_count(0)
    expect(page.locator("#one-bureau")).to_contain_text("issue it another token")


def test_the_pages_in_chinese(zh_page: Page, city: City) -> None:
    zh_log_in(zh_page, city.url, city.bureau)
    data = {"machinery", "optics", "north", "island", "Industry", "Bureau", "CSV", "XLSX"}
    for query in (
        "",
        "?table=jobs&by=size_band",
        "?table=providers",
        "?table=budget&by=district",
        "?table=verdicts&by=industry",
        "?table=equipment&by=industry",
    ):
        zh_page.goto(f"{city.url}/console/programme{query}")
        if "providers" not in query:
            expect(zh_page.locator("#programme-table")).to_contain_text("合计")
        check_chinese(zh_page, data, f"/console/programme{query}")  # takes the data out


def test_the_operator_sets_categories_when_creating_an_enterprise(page: Page, city: City) -> None:
    log_in(page, city.url, city.operator)
    page.goto(f"{city.url}/console/operator/enterprises")
    form = page.locator("form[action='/console/operator/enterprises']")
    slug = f"lens-{uuid.uuid4().hex[:6]}"
    form.get_by_label("Name", exact=True).fill("Lens Works")
    form.get_by_label("Slug", exact=True).fill(slug)
    form.get_by_label("Industry").fill("optics")
    form.get_by_label("Size band").select_option("medium")
    form.get_by_role("button", name="Create the enterprise").click()
    expect(page.get_by_role("status")).to_contain_text("Lens Works is created")
    with VeilClient(city.url, city.operator) as operator:
        (made,) = [e for e in operator.list_enterprises() if e["slug"] == slug]
    assert (made["industry"], made["district"], made["size_band"]) == ("optics", None, "medium")
    # The list shows every enterprise's categories ("not set" for the district left empty).
    row = page.locator(f"#principal-{made['id']}")
    expect(row.locator("td[data-category=industry]")).to_have_text("optics")
    expect(row.locator("td[data-category=district]")).to_have_text("(not set)")
    expect(row.locator("td[data-category=size_band]")).to_have_text("medium")
    expect(page.locator("td[data-category=district]", has_text="island")).to_have_count(1)
    # A size band outside the list is refused next to the form, nothing created.
    page.goto(f"{city.url}/console/operator/enterprises")
    form.get_by_label("Name", exact=True).fill("Odd Size")
    form.get_by_label("Slug", exact=True).fill(f"odd-{uuid.uuid4().hex[:6]}")
    form.get_by_label("Industry").fill("=cmd")
    form.get_by_role("button", name="Create the enterprise").click()
    expect(page.locator("#create-error")).to_contain_text("industry must be 1-64 printable")


def test_the_scorecards_page_in_chinese(zh_page: Page, city: City) -> None:
    """Two failed periods: the scorecards and the exit proposal, in Chinese."""
    with VeilClient(city.url, city.operator) as operator:
        provider = operator.create_provider("Gearbox AI")
    with VeilClient(city.url, city.bureau) as bureau:
        for name in ("2026-Q1", "2026-Q2"):
            period = bureau.open_period(name)
            bureau.assess_provider(provider["id"], 30, "late reports")
            bureau.close_period(period["id"])
    zh_log_in(zh_page, city.url, city.bureau)
    zh_page.goto(f"{city.url}/console/scorecards")
    expect(zh_page.locator("#scorecards td[data-result=failed]")).to_have_count(2)
    expect(zh_page.locator("#exits td[data-status=proposed]")).to_have_count(1)
    expect(zh_page.locator("#scorecards")).to_contain_text("评分企业太少")
    check_chinese(zh_page, {"Bureau", "Gearbox", "AI"}, "/console/scorecards")
