"""The language switch and the time zone: they stick, ``<html lang>`` follows, dates and
numbers are the reader's, and the switches never redirect to another site."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from babel.messages.pofile import read_po
from playwright.sync_api import Browser, Page, expect

from i18n.catalog import LOCALE_DIR, use
from policies.errors import InvalidRequest
from sandbox.config.settings import Settings
from sandbox.console.enterprise_forms import minute, parse_minute
from sandbox.console.preferences import safe_next
from sandbox.console.render import number, when
from sandbox.console.timezone import DEFAULT_TIMEZONE, set_zone
from tests.console.conftest import log_in, token_of
from tests.sandbox.conftest import World

MOMENT = datetime(2026, 11, 26, 22, 14, 5, tzinfo=UTC)


# -- without a browser ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def default_zone() -> Iterator[None]:
    """Each test sets the zone it needs; the next test finds the default again."""
    yield
    set_zone(DEFAULT_TIMEZONE)


def test_dates_and_numbers_are_the_readers() -> None:
    set_zone("Asia/Shanghai")
    with use("zh-CN"):
        assert when(MOMENT) == "2026年11月27日 06:14"
        assert when(MOMENT, seconds=True) == "2026年11月27日 06:14:05"
        assert number(12345) == "12,345"
    with use("en"):
        assert when(MOMENT) == "Nov 27, 2026, 6:14\u202fAM"  # CLDR: a narrow no-break space
        assert number(0.5) == "0.5" and number(1.0) == "1" and number(None) == "-"
    set_zone("UTC")
    with use("en"):
        assert when(MOMENT) == "Nov 26, 2026, 10:14\u202fPM"
        assert when(None) == "-"


def test_form_dates_are_read_in_the_readers_zone() -> None:
    set_zone("Asia/Shanghai")
    assert parse_minute("2026-11-27T06:14", "valid until") == MOMENT.replace(second=0)
    assert minute(MOMENT) == "2026-11-27T06:14"
    set_zone("UTC")
    assert minute(MOMENT) == "2026-11-26T22:14"
    with use("zh-CN"), pytest.raises(InvalidRequest) as refused:
        parse_minute("tomorrow", "valid until")
    assert "UTC" in str(refused.value)


def test_the_default_zone_is_the_pilot_cities_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).timezone == "Asia/Shanghai"
    assert Settings(data_dir=tmp_path, timezone="Europe/Berlin").timezone == "Europe/Berlin"
    with pytest.raises(ValueError, match="VEIL_TIMEZONE"):
        Settings(data_dir=tmp_path, timezone="Mars/Olympus_Mons")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/grants?notice=x", "/console/grants?notice=x"),
        ("/console", "/console"),
        ("https://evil.example/console/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/consolex", "/console/"),
        ("/console/\r\nSet-Cookie: x=1", "/console/"),
        ("", "/console/"),
    ],
)
def test_a_switch_goes_back_only_to_a_console_path(target: str, expected: str) -> None:
    assert safe_next(target) == expected


def test_the_console_catalog_keeps_the_templates_placeholders() -> None:
    """Jinja fills ``%(name)s`` (the check of tests/test_i18n.py compares ``{name}``)."""
    with (LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "console.po").open("rb") as handle:
        catalog = read_po(handle)
    fields = re.compile(r"%\((\w+)\)s|%%")
    for message in catalog:
        if message.id:
            assert sorted(fields.findall(str(message.id))) == sorted(
                fields.findall(str(message.string))
            ), message.id


# -- in a browser -----------------------------------------------------------------------------


def lang(page: Page) -> str | None:
    return page.locator("html").get_attribute("lang")


@pytest.mark.integration
def test_the_language_switch_sticks_across_pages(page: Page, world: World) -> None:
    page.goto(f"{world.url}/console/login?next=/console/grants")
    assert lang(page) == "en"
    page.get_by_role("link", name="中文").click()
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/grants$"))
    assert lang(page) == "zh-CN"
    page.get_by_label("API 令牌").fill(token_of(world.acme))
    page.get_by_role("button", name="登录").click()
    expect(page).to_have_url(re.compile(r"/console/grants$"))
    assert lang(page) == "zh-CN"
    for name, path in (("数据集", "datasets"), ("使用回执", "receipts"), ("API 令牌", "tokens")):
        page.get_by_role("navigation", name="主导航").get_by_role("link", name=name).click()
        expect(page).to_have_url(re.compile(f"/console/{path}$"))
        assert lang(page) == "zh-CN"
        expect(page.get_by_role("heading", level=1)).to_have_text(name)
    cookie = next(c for c in page.context.cookies() if c["name"] == "veil_lang")
    assert cookie["value"] == "zh-CN" and cookie["path"] == "/" and cookie["sameSite"] == "Lax"
    assert cookie["expires"] > (datetime.now(UTC) + timedelta(days=300)).timestamp()
    page.get_by_role("link", name="English").click()
    expect(page).to_have_url(re.compile(r"/console/tokens$"))
    assert lang(page) == "en"
    page.get_by_role("link", name="Grants").click()
    assert lang(page) == "en"


@pytest.mark.integration
def test_the_switch_wins_over_the_browsers_language(browser: Browser, world: World) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.goto(f"{world.url}/console/login")
    assert lang(page) == "zh-CN"  # Accept-Language: zh-CN
    page.get_by_role("link", name="English").click()
    assert lang(page) == "en"
    log_in(page, world.url, token_of(world.provider))
    expect(page.get_by_role("heading", level=1)).to_have_text("Catalog")
    assert lang(page) == "en"
    context.close()


@pytest.mark.integration
def test_the_time_zone_is_shown_and_can_be_changed(page: Page, world: World) -> None:
    log_in(page, world.url, token_of(world.acme))
    page.goto(f"{world.url}/console/grants")
    expect(page.locator("footer")).to_contain_text("Time zone: Asia/Shanghai")
    until = page.locator(f"#g-{world.grant_id}-until")
    shanghai = datetime.fromisoformat(until.input_value())
    expect(page.get_by_label("Valid until (Asia/Shanghai)").last).to_be_visible()

    page.get_by_role("link", name="Change the time zone").click()
    page.get_by_label("Time zone").select_option("UTC")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/console/grants$"))
    expect(page.locator("footer")).to_contain_text("Time zone: UTC")
    assert shanghai - datetime.fromisoformat(until.input_value()) == timedelta(hours=8)
    cookie = next(c for c in page.context.cookies() if c["name"] == "veil_tz")
    assert cookie["value"] == "UTC" and cookie["sameSite"] == "Lax"
    page.goto(f"{world.url}/console/tokens")
    expect(page.locator("footer")).to_contain_text("Time zone: UTC")


@pytest.mark.integration
def test_unknown_choices_change_nothing_and_never_leave_the_site(world: World) -> None:
    with httpx.Client(base_url=world.url) as http:
        answer = http.get(
            "/console/language", params={"lang": "fr", "next": "https://evil.example/"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/console/"
        assert "veil_lang" not in answer.cookies
        answer = http.get("/console/timezone", params={"tz": "Mars/Base", "next": "//evil.example"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/"
        assert "veil_tz" not in answer.cookies
        answer = http.get("/console/language", params={"lang": "zh-CN", "next": "/console/jobs"})
        assert answer.headers["location"] == "/console/jobs"
        assert answer.cookies["veil_lang"] == "zh-CN"
        login = http.get("/console/login", cookies={"veil_lang": "zh-CN"})
        assert '<html lang="zh-CN">' in login.text and login.headers["content-language"] == "zh-CN"
