"""A registered assessor's console page in a real browser: the open period's providers,
its own score of each recorded through the form, and the page in Chinese
(docs/programme.md, "Assessors")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, expect

from keys import LocalKeyServer
from sandbox.client import VeilClient
from sandbox.console.session import csrf_token
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from tests.console.conftest import log_in, zh_log_in
from tests.console.test_language import check_chinese
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration


@dataclass
class Assessing:
    url: str
    bureau: str  # its token
    assessor: str  # its token, issued by the operator
    assessor_id: str
    provider_id: str


@pytest.fixture(scope="module")
def assessing(
    tmp_path_factory: pytest.TempPathFactory, key_server: LocalKeyServer
) -> Iterator[Assessing]:
    """A bureau, a provider, and an assessor the bureau registered."""
    settings = settings_for(tmp_path_factory.mktemp("assessor-console"), key_server)
    with open_veil(settings, worker=False) as veil, ApiThread(veil.settings, veil) as url:
        token = bootstrap_operator(veil)
        assert token is not None
        with VeilClient(url, token) as operator:
            provider = operator.create_provider("Gearbox AI")
            bureau = operator.issue_token(operator.create_bureau("Industry Bureau")["id"])
            with VeilClient(url, bureau) as client:
                registered = client.register_assessor("Quality Institute")
            assessor = operator.issue_token(registered["id"])
            yield Assessing(url, bureau, assessor, registered["id"], provider["id"])


def test_an_assessor_records_its_score_through_the_form(page: Page, assessing: Assessing) -> None:
    log_in(page, assessing.url, assessing.assessor)
    expect(page).to_have_url(f"{assessing.url}/console/assessments")
    expect(page.get_by_role("main")).to_contain_text("No evaluation period is open")
    with VeilClient(assessing.url, assessing.bureau) as bureau:
        period = bureau.open_period("2026-Q3")
    page.reload()
    row = page.locator(f"#provider-{assessing.provider_id}")
    expect(row).to_contain_text("Gearbox AI")
    row.get_by_label("Score (0-100)").fill("75")
    row.get_by_label("Reason").fill("reports on time")
    row.get_by_role("button", name="Record").click()
    expect(page.get_by_role("status")).to_contain_text("Your assessment was recorded.")
    expect(row.get_by_test_id("score")).to_have_text("75.0")
    with VeilClient(assessing.url, assessing.bureau) as bureau:
        (card,) = bureau.close_period(period["id"])["scorecards"]
    (named,) = card["document"]["components"]["assessors"]["assessments"]
    assert (named["assessor_id"], named["score"]) == (assessing.assessor_id, 75.0)


def test_the_page_in_chinese(zh_page: Page, assessing: Assessing) -> None:
    with VeilClient(assessing.url, assessing.bureau) as bureau:
        bureau.open_period("2026-Q4")
    with VeilClient(assessing.url, assessing.assessor) as assessor:
        assessor.record_assessment(assessing.provider_id, 60, "on plan")
    zh_log_in(zh_page, assessing.url, assessing.assessor)
    zh_page.goto(f"{assessing.url}/console/assessments")
    expect(zh_page.get_by_role("heading", level=1)).to_have_text("评估")
    data = {"Gearbox AI", "2026-Q4", "on plan", assessing.provider_id, "Quality Institute"}
    check_chinese(zh_page, data, "/console/assessments")


def test_a_refused_score_is_said_next_to_the_form(assessing: Assessing) -> None:
    """What the browser would not send (a score that is no number) is refused by the server,
    with the reason on the page, and nothing recorded."""
    form = {"csrf": csrf_token(assessing.assessor), "provider_id": assessing.provider_id,
            "score": "many", "reason": "not a number"}  # fmt: skip
    cookies = {"veil_console": assessing.assessor}
    with httpx.Client(base_url=assessing.url, cookies=cookies) as http:
        answer = http.post("/console/assessments", data=form)
    assert answer.status_code == 422 and "a number from 0 to 100" in answer.text
