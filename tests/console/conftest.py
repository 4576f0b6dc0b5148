"""Browser tests of the web console: Debian's Chromium driven by Playwright, headless.

Each test gets a fresh browser context (its own cookies); when a test fails, a
screenshot of its page is saved under ``$VEIL_SCREENSHOTS`` (default
``.test-screenshots/``) and its path printed in the failure report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.sandbox.conftest import api, crypto_profile, veil, world  # noqa: F401 - the sandbox's fixtures

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("VEIL_SCREENSHOTS", ".test-screenshots"))

try:
    from playwright.sync_api import Browser, Page, Playwright, sync_playwright
except ImportError:  # pragma: no cover - reported by the fixture below
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    require(sync_playwright is not None, "Playwright for Python (pip install playwright)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    require(CHROMIUM.exists(), "Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
    )
    yield browser
    browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        report.sections.append(("screenshot", f"saved to {path}"))
        print(f"\nscreenshot of the failed page: {path}")
    context.close()


def log_in(page: Page, url: str, token: str) -> None:
    """Log in through the form, as a person would."""
    page.goto(f"{url}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def token_of(client: Any) -> str:
    """The bearer token a VeilClient was made with."""
    return str(client._http.headers["Authorization"]).removeprefix("Bearer ")


@pytest.fixture
def zh_page(browser: Browser) -> Iterator[Page]:
    """A browser whose language is Simplified Chinese (its Accept-Language says so)."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def zh_log_in(page: Page, url: str, token: str) -> None:
    """Log in through the form, as a person reading Chinese would."""
    page.goto(f"{url}/console/login")
    page.get_by_label("API 令牌").fill(token)
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state()
