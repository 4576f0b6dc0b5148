"""Every role's console pages in Chinese leave no English behind, and still work in English.

A browser whose language is Chinese (``Accept-Language: zh-CN``) walks each role's pages
with data on them (a dataset, grants, released jobs, denied attempts, tokens), opens every
``<details>``, and reads what a person can read: the text of the page, its title, and the
placeholders, labels for screen readers, options and button values.  Any run of three or
more Latin letters there must be data (names, ids, columns: marked ``class="data"`` or
``<code>``, or one of the world's own names) or one of the few technical words below;
anything else is English the catalogs missed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from sandbox.client import ApiError
from sandbox.demo.data import DECLARATION, MACHINES, SHIFTS
from tests.console.conftest import log_in, token_of, zh_log_in
from tests.sandbox.conftest import PURPOSE, World, make_world

# make test-slow: a module of ~20 s or more (test durations)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Technical words a Chinese page may keep (names of formats, standards and products).
ALLOWED = {
    "API", "CSV", "JSON", "JSONL", "Parquet", "Polars", "Veil", "OpenDP", "OpenBao", "UTC", "SHA",
    "PEM", "UTF", "MiB", "Cookie", "SGD", "ID", "SQL", "URL",
    "BOM", "GBK", "XLSX", "Excel", "MES",  # encodings, the catalogue's format, its sources
    "KPI",  # KPI contracts (docs/verdicts.md)
}  # fmt: skip
#: What the page walk does not read: data, code, text in another language (the switch's
#: "English"), and the charts' SVG, whose own words are drawn by ``charts.py``.
SKIPPED = ".data, code, pre, script, style, noscript, [lang]:not([lang='zh-CN'])"
#: Reads the page as a person would, after opening every <details>.
READ_PAGE = """(skipped) => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const texts = [document.title];
  const attrs = ["placeholder", "aria-label", "title", "alt"];
  for (const el of document.querySelectorAll("*")) {
    if (el.closest(skipped)) continue;
    for (const a of attrs) { if (el.hasAttribute(a)) texts.push(el.getAttribute(a)); }
    if (el.matches("option")) texts.push(el.textContent);
    if (el.matches("input[type=submit], input[type=button]")) texts.push(el.value);
  }
  document.querySelectorAll(skipped).forEach((el) => el.remove());
  texts.push(document.body.innerText);
  return texts.join("\\n");
}"""
_WORD = re.compile(r"[A-Za-z0-9_]+")
#: A statistic as code writes it (``mean(temperature_c)``, ``quantile(x, 0.9)``): not prose.
_CALL = re.compile(r"\b[a-z_]+\([^()]*\)")
_LATIN_RUN = re.compile(r"[A-Za-z]{3,}")


def data_words(world: World) -> set[str]:
    """The words of the world's own names: principals, datasets, columns, categories."""
    names = ["Acme Metal", "Globex", "Predicta", "Other Analytics", "Olivia", "globex-log"]
    names += [DECLARATION["name"], PURPOSE, "Asia/Shanghai", *MACHINES, *SHIFTS]
    names += [c["name"] for c in DECLARATION["columns"]]
    return {w for name in names for w in _WORD.findall(name)}


def english_left(text: str, data: set[str]) -> list[str]:
    """The words of ``text`` that look like English UI text, not data or allowed terms."""
    found = []
    for word in _WORD.findall(_CALL.sub(" ", text)):
        if not _LATIN_RUN.search(word) or "_" in word or any(c.isdigit() for c in word):
            continue  # no English word in it, or an identifier (ids, tokens, hashes)
        if word in ALLOWED or word in data:
            continue
        found.append(word)
    return found


def check_chinese(page: Page, data: set[str], where: str) -> None:
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    text = page.evaluate(READ_PAGE, SKIPPED)
    left = english_left(text, data)
    context = {w: _around(text, w) for w in dict.fromkeys(left)}
    assert not left, f"English left on {where}: {context}"


def _around(text: str, word: str) -> str:
    at = text.find(word)
    return text[max(0, at - 40) : at + len(word) + 40].replace("\n", " / ")


@dataclass
class Walk:
    """A world with something on every page, and the tokens of each role."""

    world: World
    officer: str
    job_id: str
    table_job_id: str


@pytest.fixture
def walk(veil: Any, api: str) -> Walk:
    world = make_world(veil, api, tiers=[1, 2, 3])
    provider = world.provider
    job = provider.submit_job(
        world.dataset_id, PURPOSE, 0.2, [{"kind": "mean", "column": "temperature_c"}], "shift"
    )
    table = provider.submit_table(
        world.dataset_id,
        PURPOSE,
        [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
        "shift",
    )
    for submitted in (job, table):
        provider.wait_for_job(submitted["id"], timeout=120)
    with pytest.raises(ApiError):  # a denied attempt, for the officer's attention page
        provider.submit_job(world.dataset_id, "marketing", 0.1, [{"kind": "count"}])
    # A KPI contract with a verdict, and one waiting for the enterprise's consent.
    kpi = {"kpi": "lead_time", "columns": {"lead_time": "cycle_time_s"},
           "time_column": "temperature_c", "baseline": {"from": 20, "to": 60},
           "evaluation": {"from": 60, "to": 120}}  # fmt: skip
    body = {"dataset_id": world.dataset_id, "purpose": PURPOSE, "kpi": kpi, "target": 0.05,
            "epsilon": 0.1}  # fmt: skip
    agreed = provider.propose_kpi_contract(body)
    world.acme.accept_kpi_contract(agreed["id"], agreed["terms_sha256"])
    evaluation = provider.evaluate_kpi_contract(agreed["id"])
    provider.wait_for_kpi_verdict(agreed["id"], evaluation["id"], timeout=120)
    provider.propose_kpi_contract(body)
    created = world.operator.create_security_officer("Olivia", None)
    officer = world.operator.issue_token(created["id"])
    return Walk(world, officer, job["id"], table["id"])


def visit(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, (url, response and response.status)


ENTERPRISE = [
    "/console/datasets", "/console/grants", "/console/code", "/console/receipts", "/console/kpi",
]  # fmt: skip
PROVIDER = [
    "/console/catalog", "/console/query", "/console/jobs", "/console/kpi", "/console/scorecards",
]  # fmt: skip
OVERSIGHT = ["/console/audit", "/console/attention", "/console/providers"]
OPERATOR = [
    "/console/operator/enterprises",
    "/console/operator/providers",
    "/console/operator/officers",
    "/console/operator/bureau",
]


def test_enterprise_pages_in_chinese(zh_page: Page, walk: Walk) -> None:
    world, data = walk.world, data_words(walk.world)
    zh_page.goto(f"{world.url}/console/login")
    check_chinese(zh_page, data, "the login page")
    zh_log_in(zh_page, world.url, token_of(world.acme))
    for path in [*ENTERPRISE, "/console/tokens", "/console/preferences"]:
        visit(zh_page, world.url + path)
        check_chinese(zh_page, data, path)
    # A receipt, and the columns detected in a chosen file (the upload form's fragment).
    visit(zh_page, world.url + "/console/receipts")
    zh_page.get_by_label("服务商").select_option(label="Predicta")
    zh_page.get_by_role("button", name="签发回执").click()
    expect(zh_page.get_by_role("heading", name="Predicta 的使用回执")).to_be_visible()
    check_chinese(zh_page, data, "an issued receipt")
    visit(zh_page, world.url + "/console/datasets")
    start = world.csv[: world.csv.index(b"\n", 4000) + 1]
    zh_page.get_by_label("CSV 或 Parquet 文件").set_input_files(
        files=[{"name": "sample.csv", "mimeType": "text/csv", "buffer": start}]
    )
    expect(zh_page.get_by_role("group", name="temperature_c 识别为：小数")).to_be_visible()  # noqa: RUF001
    check_chinese(zh_page, data, "the detected columns")


def test_provider_pages_in_chinese(zh_page: Page, walk: Walk) -> None:
    world, data = walk.world, data_words(walk.world)
    zh_log_in(zh_page, world.url, token_of(world.provider))
    jobs = [f"/console/jobs/{walk.job_id}", f"/console/jobs/{walk.table_job_id}"]
    for path in [*PROVIDER, *jobs, "/console/tokens"]:
        visit(zh_page, world.url + path)
        check_chinese(zh_page, data, path)
    visit(zh_page, world.url + "/console/query")
    zh_page.get_by_label(re.compile(r"^统计 1：\s*类型$")).select_option("count")  # noqa: RUF001
    zh_page.get_by_role("button", name="预览精度").click()
    expect(zh_page.get_by_role("region", name="精度预览")).to_be_visible()
    check_chinese(zh_page, data, "an accuracy preview")
    missing = zh_page.goto(f"{world.url}/console/jobs/job_missing")
    assert missing is not None and missing.status == 404
    check_chinese(zh_page, data, "a page not found")


@pytest.mark.parametrize("role", ["security officer", "operator"])
def test_oversight_pages_in_chinese(zh_page: Page, walk: Walk, role: str) -> None:
    world, data = walk.world, data_words(walk.world)
    token = walk.officer if role == "security officer" else token_of(world.operator)
    zh_log_in(zh_page, world.url, token)
    own = OPERATOR if role == "operator" else []
    for path in [*OVERSIGHT, *own, "/console/tokens"]:
        visit(zh_page, world.url + path)
        check_chinese(zh_page, data, f"{path} ({role})")
    expect(zh_page.get_by_role("navigation", name="主导航")).to_contain_text("审计日志")


@pytest.mark.parametrize(
    ("who", "paths"),
    [
        ("acme", [*ENTERPRISE, "/console/tokens"]),
        ("provider", [*PROVIDER, "/console/tokens"]),
        ("operator", [*OVERSIGHT, *OPERATOR, "/console/tokens"]),
    ],
)
def test_the_same_pages_still_work_in_english(
    page: Page, walk: Walk, who: str, paths: list[str]
) -> None:
    world = walk.world
    log_in(page, world.url, token_of(getattr(world, who)))
    for path in paths + ([f"/console/jobs/{walk.job_id}"] if who == "provider" else []):
        visit(page, world.url + path)
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.get_by_role("link", name="中文")).to_be_visible()
