"""The API reference pages (``/docs``, ``/redoc``) work with no internet access.

Their scripts, styles and icon come from this server (``sandbox/api/docs_offline.py``);
the browser tests block every request to another host and watch for any request the
pages' Content-Security-Policy refuses.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, Route

from sandbox.api.docs_offline import REDOC_POLICY, SWAGGER_POLICY

pytestmark = pytest.mark.integration

EXPECTED_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.urls.append(str(values["src"]))
            else:
                self.inline_scripts += 1
        elif tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))


@pytest.mark.parametrize(("path", "policy"), [("/docs", SWAGGER_POLICY), ("/redoc", REDOC_POLICY)])
def test_every_asset_of_the_docs_is_served_here(api: str, path: str, policy: str) -> None:
    with httpx.Client(base_url=api) as http:
        page = http.get(path)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == policy
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("style")[0]
        parser = _Assets()
        parser.feed(page.text)
        assert parser.inline_scripts == 0
        assert any(u.endswith(".js") for u in parser.urls)
        for url in parser.urls:
            absolute = urljoin(f"{api}{path}", url)
            assert urlsplit(absolute).netloc == urlsplit(api).netloc, url
            asset = http.get(absolute)
            assert asset.status_code == 200, url
            expected = EXPECTED_TYPES[re.sub(r".*(\.\w+)$", r"\1", urlsplit(absolute).path)]
            assert asset.headers["content-type"].split(";")[0] == expected, url
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert len(asset.content) > 0


def test_the_pages_speak_the_readers_language(api: str) -> None:
    chinese = httpx.get(f"{api}/docs", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in chinese.text
    assert "<title>Veil API 参考" in chinese.text
    english = httpx.get(f"{api}/redoc", headers={"Accept-Language": "en"})
    assert '<html lang="en">' in english.text
    assert "<title>Veil API reference (ReDoc)</title>" in english.text


def test_the_openapi_document_names_no_docs_route(api: str) -> None:
    """The pages are not operations of the API."""
    paths = httpx.get(f"{api}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def _offline(page: Page, api: str) -> tuple[list[str], list[str]]:
    """Block every request to another host; collect them and the CSP's refusals."""
    here = urlsplit(api).netloc
    blocked: list[str] = []
    refused: list[str] = []

    def route(r: Route) -> None:
        if urlsplit(r.request.url).netloc in (here, ""):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("internetdisconnected")

    def console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.route("**/*", route)
    page.on("console", console)
    return blocked, refused


def test_swagger_ui_renders_the_operations_offline(page: Page, api: str) -> None:
    blocked, refused = _offline(page, api)
    page.goto(f"{api}/docs")
    page.locator(".opblock").first.wait_for()
    operations = page.locator(".opblock")
    assert operations.count() > 20
    assert page.locator(".opblock-summary-path", has_text="/v1/health").count() == 1
    # An operation opens, with its parameters and responses.
    page.locator(".opblock-summary", has_text="/v1/health").first.click()
    page.locator(".opblock.is-open .responses-wrapper").wait_for()
    assert blocked == [], blocked
    assert refused == [], refused


def test_redoc_renders_the_operations_offline(page: Page, api: str) -> None:
    blocked, refused = _offline(page, api)
    page.goto(f"{api}/redoc")
    page.locator("[data-section-id^='operation/']").first.wait_for(timeout=30_000)
    assert page.locator("[data-section-id^='operation/']").count() > 20
    assert blocked == [], blocked
    # ReDoc's "API docs by Redocly" footer links its logo from Redocly's CDN: the page's
    # policy refuses it (so it is never requested), and that image is all that is missing.
    assert [r for r in refused if "Loading the image 'https://cdn.redoc.ly/" not in r] == []
