"""The provider's pages in a real browser: catalog and mock data, a private query with its
accuracy preview, the job's progress and released result, jobs per day, refusals, keyboard;
the query in SQL (translated, previewed and run as the API does; refused with where and why;
in Chinese)."""

from __future__ import annotations

import json
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
from tests.console.conftest import log_in, token_of, zh_log_in
from tests.console.test_language import check_chinese, data_words
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
    # The page's script moves the focus to the refusal once it has loaded: wait for it (a
    # busy machine runs the script later than the text appears).
    expect(page.locator("[data-focus]")).to_be_focused()
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


# ---------------------------------------------------------------- the query in SQL

SQL = (
    f'SELECT shift, COUNT(*), AVG(temperature_c)\nFROM "{NAME}"\n'
    "WHERE machine IN ('press-01', 'lathe-01') AND cycle_time_s < 60\nGROUP BY shift"
)
DOCUMENT = {
    "aggregates": [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
    "group_by": ["shift"],
    "where": [
        {"column": "machine", "op": "in", "value": ["press-01", "lathe-01"]},
        {"column": "cycle_time_s", "op": "<", "value": 60},
    ],
}
#: OR in WHERE, at line 3, column 7: refused by the subset (sql_unsupported).
REFUSED = f"SELECT COUNT(*)\nFROM \"{NAME}\"\nWHERE machine = 'press-01' OR shift = 'late'"

SQL_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "GROUP", "COUNT", "SUM", "AVG", "MEDIAN"}


def open_sql_form(page: Page) -> None:
    page.get_by_role("link", name="New query").click()
    page.get_by_role("navigation", name="How to write the query").get_by_role(
        "link", name="SQL"
    ).click()
    expect(page).to_have_url(re.compile(r"/console/query\?mode=sql"))


def test_sql_is_translated_previewed_and_run_with_its_sql_kept(
    page: Page, veil: Veil, world: World
) -> None:
    log_in(page, world.url, token_of(world.provider))
    open_sql_form(page)
    sql = page.get_by_label("The query in SQL")
    expect(sql).to_have_value(f'SELECT COUNT(*)\nFROM "{NAME}"')  # a blank form's start
    sql.fill(SQL)
    page.get_by_label("Epsilon (ε) to spend").fill("0.1")

    page.get_by_role("button", name="Translate to JSON").click()
    translation = page.get_by_role("region", name="Translation")
    expect(translation).to_be_focused()
    expect(translation).to_contain_text(world.dataset_id)
    assert json.loads(translation.locator("pre").inner_text()) == DOCUMENT
    expect(page.get_by_label("The query in SQL")).to_have_value(SQL)  # as typed
    assert spent(world) == 0 and world.provider.list_jobs() == []

    page.get_by_role("button", name="Preview accuracy").click()
    preview = page.get_by_role("region", name="Accuracy preview")
    expect(preview).to_contain_text("would spend ε 0.1")
    expect(preview.get_by_role("row", name="mean(temperature_c)")).to_be_visible()
    assert spent(world) == 0 and world.provider.list_jobs() == []
    page.screenshot(path="/tmp/provider-query-sql.png", full_page=True)

    page.get_by_role("button", name="Run").click()
    expect(page).to_have_url(re.compile(r"/console/jobs/job_\w+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("pre.job-sql")).to_have_text(SQL)
    job = world.provider.get_job(job_id)
    # What the API stores for POST /v1/jobs with this sql: the text, and its document.
    assert job["sql"] == SQL and job["query"] == DOCUMENT
    assert job["dataset_id"] == world.dataset_id and job["purpose"] == PURPOSE
    assert spent(world) == pytest.approx(0.1)
    run_queued_job(veil)
    expect(page.get_by_role("region", name="Result")).to_be_visible(timeout=30_000)


def test_a_refused_sql_says_where_and_why_and_creates_no_job(page: Page, world: World) -> None:
    log_in(page, world.url, token_of(world.provider))
    open_sql_form(page)
    page.get_by_label("The query in SQL").fill(REFUSED)
    form = page.locator("#query-form")
    alert = form.get_by_role("alert")
    for button in ("Translate to JSON", "Preview accuracy", "Run"):
        page.get_by_role("button", name=button).click()
        expect(alert).to_contain_text("sql: WHERE at line 3, column 7: OR is not supported")
        expect(alert).to_contain_text("for several values of one column use IN")  # how to fix
        expect(alert).not_to_contain_text("press-01")  # never a constant of the query
        expect(page.get_by_label("The query in SQL")).to_have_value(REFUSED)
        expect(page.get_by_role("region", name="Translation")).to_have_count(0)
    page.screenshot(path="/tmp/provider-query-sql-refused.png", full_page=True)

    page.get_by_label("The query in SQL").fill("SELECT COUNT(*) FROM nowhere")
    page.get_by_role("button", name="Run").click()
    expect(alert).to_contain_text("not found")
    expect(alert.get_by_role("listitem")).to_contain_text("FROM names one dataset you hold")
    page.get_by_label("The query in SQL").fill("  ")
    page.get_by_role("button", name="Translate to JSON").click()
    expect(alert).to_contain_text("write the query in SQL")
    assert world.provider.list_jobs() == [] and spent(world) == 0


def test_sql_forms_need_the_session_and_its_csrf_token(world: World) -> None:
    form = {"sql": SQL, "purpose": PURPOSE, "epsilon": "0.1", "delta": "0"}
    with httpx.Client(
        base_url=world.url, cookies={"veil_console": token_of(world.provider)}
    ) as http:
        csrf = re.search(r'name="csrf" value="(\w+)"', http.get("/console/query?mode=sql").text)
        assert csrf is not None
        for path in ("/console/query/sql", "/console/query/sql/translate"):
            assert http.post(path, data=form).status_code == 403
            assert http.post(path, data=form | {"csrf": "0" * 64}).status_code == 403
        translated = http.post("/console/query/sql/translate", data=form | {"csrf": csrf[1]})
        assert translated.status_code == 200 and "cycle_time_s" in translated.text
        refused = http.post("/console/query/sql", data=form | {"csrf": csrf[1], "epsilon": "x"})
        assert refused.status_code == 422 and "epsilon (ε) must be" in refused.text
    without_session = httpx.post(f"{world.url}/console/query/sql", data=form)
    assert without_session.status_code == 403  # no session, so no CSRF token: nothing submitted
    assert world.provider.list_jobs() == []


def test_the_sql_form_in_chinese(zh_page: Page, world: World) -> None:
    # SQL's keywords are code in any language (the reasons name them: "WHERE 中不支持 OR").
    data = data_words(world) | SQL_KEYWORDS
    zh_log_in(zh_page, world.url, token_of(world.provider))
    zh_page.goto(f"{world.url}/console/query")
    zh_page.get_by_role("navigation", name="查询的写法").get_by_role("link", name="SQL").click()
    expect(zh_page.get_by_label("以 SQL 写的查询")).to_be_visible()
    sql_page = zh_page.url
    # check_chinese takes data (the textarea among it) off the page: each step reloads it.
    check_chinese(zh_page, data, "the SQL form")
    zh_page.goto(sql_page)
    zh_page.get_by_label("以 SQL 写的查询").fill(SQL)
    zh_page.get_by_role("button", name="转换为 JSON").click()
    expect(zh_page.get_by_role("region", name="转换结果")).to_contain_text("没有提交作业")
    check_chinese(zh_page, data, "a translation")
    zh_page.goto(sql_page)
    zh_page.get_by_label("以 SQL 写的查询").fill(REFUSED)
    zh_page.get_by_role("button", name="运行").click()
    alert = zh_page.locator("#query-error").get_by_role("alert")
    expect(alert).to_contain_text("第 3 行第 7 列")
    expect(alert).to_contain_text("WHERE 中不支持 OR")
    check_chinese(zh_page, data, "a refused SQL query")
    assert world.provider.list_jobs() == []
