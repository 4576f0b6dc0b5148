"""The operator's console pages in a real browser, in English and in Chinese: creating an
enterprise, a provider account and a security officer, and issuing a token that then works
against the API; each audited exactly as the API audits it; nobody else reaches them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from i18n import Msg
from i18n.catalog import translate
from sandbox.client import VeilClient
from sandbox.console.session import csrf_token
from sandbox.demo.data import DECLARATION, production_log
from tests.console.conftest import token_of
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration

LANGUAGES = ["en", "zh-CN"]
PAGES = (
    "/console/operator/enterprises",
    "/console/operator/providers",
    "/console/operator/officers",
    "/console/operator/bureau",
)


@pytest.fixture(params=LANGUAGES)
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page_in(browser: Browser, lang: str) -> Iterator[Page]:
    """A page in a browser whose language is ``lang`` (it sends that Accept-Language)."""
    context = browser.new_context(
        locale=lang,
        extra_http_headers={"Accept-Language": lang},
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def text(lang: str) -> Any:
    """What the console shows for an English message, in ``lang``; Chinese must differ."""

    def shown(message: str) -> str:
        translated = translate(message, lang)
        assert lang == "en" or translated != str(message), f"untranslated: {message!r}"
        return translated

    return shown


def log_in(page: Page, url: str, token: str) -> None:
    """Log in through the form, found by its fields (their labels are in the page's language)."""
    page.goto(f"{url}/console/login")
    page.locator("#token").fill(token)
    page.locator("form[action='/console/login'] button[type=submit]").click()
    page.wait_for_load_state()


#: Words a Chinese page keeps: names of things, not UI text.
KEPT = {"API", "ID", "UTC", "Veil", "VEIL_TOKEN_TTL_DAYS", "slug", "acme-metal", "Ctrl", "Mac"}


def english_left(page: Page, data: list[str]) -> list[str]:
    """English words in the page's main content, data values (names, slugs, ids) aside."""
    content = page.locator("main").inner_text()
    for value in sorted(data, key=len, reverse=True):
        content = content.replace(value, " ")
    content = re.sub(r"\b(ent|prv|so|op|tok)_[0-9a-f]+\b", " ", content)  # ids
    return [w for w in re.findall(r"[A-Za-z][A-Za-z_\-]+", content) if w not in KEPT]


def event(world: World, action: str, resource: str) -> dict[str, Any]:
    (found,) = world.operator.audit_events(action=action, resource=resource)
    return found


def same_audit(console: dict[str, Any], api: dict[str, Any]) -> None:
    """The console's event is the API's: same actor, outcome, kind of resource, detail keys."""
    for key in ("action", "actor_id", "actor_role", "outcome"):
        assert console[key] == api[key], key
    assert console["resource"].split(":")[0] == api["resource"].split(":")[0]
    assert console["details"].keys() == api["details"].keys()


def test_the_operator_creates_an_enterprise_and_a_provider_whose_token_works(
    page_in: Page, lang: str, world: World
) -> None:
    t = text(lang)
    page = page_in
    tag = uuid.uuid4().hex[:8]
    slug = f"lumen-{tag}"
    log_in(page, world.url, token_of(world.operator))
    expect(page).to_have_url(re.compile(r"/console/operator/enterprises$"))  # its first page
    for path in PAGES:
        expect(page.locator(f"header nav a[href='{path}']")).to_have_count(1)
    expect(page.get_by_role("heading", level=1)).to_have_text(t("Enterprises"))
    acme = world.acme.me()
    expect(page.locator(f"#principal-{acme['id']}")).to_contain_text(acme["slug"])

    form = page.locator("form[action='/console/operator/enterprises']")
    form.get_by_label(t("Name"), exact=True).fill("鲁门塑料 Lumen")
    form.get_by_label(t("Slug"), exact=True).fill(slug)
    form.get_by_role("button", name=t("Create the enterprise")).click()
    (created,) = [e for e in world.operator.list_enterprises() if e["slug"] == slug]
    assert created["name"] == "鲁门塑料 Lumen" and created["status"] == "active"
    notice = Msg(
        "{name} is created, with id {id}. Issue its first API token from its row below.",
        name=created["name"],
        id=created["id"],
    )
    expect(page.get_by_role("status")).to_have_text(t(notice))
    row = page.locator(f"#principal-{created['id']}")
    expect(row).to_contain_text(slug)
    expect(row.get_by_test_id("status")).to_have_text(t("active"))
    via_api = world.operator.create_enterprise("Via API", f"api-{tag}")
    mine = event(world, "enterprise.created", f"principal:{created['id']}")
    same_audit(mine, event(world, "enterprise.created", f"principal:{via_api['id']}"))
    assert mine["tenant_id"] == created["id"]
    assert mine["details"] == {"name": created["name"], "slug": slug}
    page.reload()  # the notice is shown once
    expect(page.get_by_role("status")).to_have_count(0)
    # Its token, issued here, uploads a dataset: its key-server namespace and key exist.
    page.locator(f"#principal-{created['id']}").get_by_role("button").click()
    with VeilClient(world.url, page.get_by_test_id("new-token").input_value()) as lumen:
        dataset = lumen.create_dataset(DECLARATION["name"], DECLARATION["columns"])
        assert lumen.upload(dataset["id"], production_log(50, seed=3))["row_count"] == 50
    page.goto(f"{world.url}/console/operator/enterprises")

    page.goto(f"{world.url}/console/operator/providers")
    expect(page.get_by_role("heading", level=1)).to_have_text(t("Provider accounts"))
    form = page.locator("form[action='/console/operator/providers']")
    form.get_by_label(t("Name"), exact=True).fill(f"Lumen Analytics {tag}")
    form.get_by_role("button", name=t("Create the provider account")).click()
    (provider,) = [p for p in world.operator.list_providers() if p["name"].endswith(tag)]
    expect(page.get_by_role("status")).to_contain_text(provider["id"])
    mine = event(world, "provider.created", f"principal:{provider['id']}")
    via_api = world.operator.create_provider("Via API")
    same_audit(mine, event(world, "provider.created", f"principal:{via_api['id']}"))

    row = page.locator(f"#principal-{provider['id']}")
    row.get_by_label(re.compile(re.escape(t("Valid for (days)")))).fill("7")
    row.get_by_role("button").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(t("New API token"))
    secret = page.get_by_test_id("new-token").input_value()
    assert secret.startswith("veil_")
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{world.url}/v1/me", headers=headers).json()["id"] == provider["id"]
    catalog = httpx.get(f"{world.url}/v1/catalog", headers=headers)
    assert catalog.status_code == 200 and catalog.json() == []  # no grant yet: nothing listed
    (issued,) = world.operator.list_tokens(provider["id"])
    mine = event(world, "token.issued", f"token:{issued['id']}")
    api_token = world.operator.new_token(via_api["id"])
    same_audit(mine, event(world, "token.issued", f"token:{api_token['id']}"))
    assert mine["details"]["principal_id"] == provider["id"]
    lifetime = datetime.fromisoformat(issued["expires_at"]) - datetime.fromisoformat(
        issued["created_at"]
    )
    assert lifetime == timedelta(days=7)  # the lifetime typed in the form
    if lang != "en":
        assert english_left(page, [provider["name"], secret]) == []
    # Shown once: never again on any page.
    names = [
        p["name"] for p in [*world.operator.list_enterprises(), *world.operator.list_providers()]
    ]
    for path in (*PAGES, "/console/tokens"):
        page.goto(f"{world.url}{path}")
        assert secret not in page.content(), path
        if lang != "en" and path in PAGES:
            slugs = [e["slug"] for e in world.operator.list_enterprises()]
            assert english_left(page, [*names, "Olivia", *slugs]) == [], path


def test_a_duplicate_slug_is_refused_next_to_the_form_and_nothing_is_created(
    page_in: Page, lang: str, world: World
) -> None:
    t = text(lang)
    page = page_in
    acme = world.acme.me()
    before = world.operator.list_enterprises()
    events = world.operator.audit_events(action="enterprise.created")
    log_in(page, world.url, token_of(world.operator))
    form = page.locator("form[action='/console/operator/enterprises']")
    form.get_by_label(t("Name"), exact=True).fill("Acme again")
    form.get_by_label(t("Slug"), exact=True).fill(acme["slug"])
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        form.get_by_role("button", name=t("Create the enterprise")).click()
    assert answer.value.status == 409
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(t(Msg("Not created: {reason}", reason="")).strip())
    expect(alert).to_contain_text(acme["slug"])
    if lang == "en":
        expect(alert).to_contain_text("exists already; choose another")
    expect(page.locator("#create-error")).to_be_focused()
    expect(form.get_by_label(t("Name"), exact=True)).to_have_value("Acme again")  # kept
    assert world.operator.list_enterprises() == before
    assert world.operator.audit_events(action="enterprise.created") == events


def test_the_operator_creates_the_bureau_once_and_issues_its_token(
    page_in: Page, lang: str, world: World
) -> None:
    """The form creates the programme's bureau (audited as the API's ``bureau.created``); its
    token, shown once, reads the programme; then the form is gone, and a second creation
    posted anyway is refused (409) next to it, creating nothing."""
    t = text(lang)
    page = page_in
    operator = token_of(world.operator)
    with httpx.Client(base_url=world.url, cookies={"veil_console": operator}) as http:
        too_long = http.post(
            "/console/operator/bureau", data={"csrf": csrf_token(operator), "name": "b" * 201}
        )
    assert too_long.status_code == 422 and 'role="alert"' in too_long.text
    assert world.operator.audit_events(action="bureau.created") == []
    log_in(page, world.url, operator)
    page.goto(f"{world.url}/console/operator/bureau")
    expect(page.get_by_role("heading", level=1)).to_have_text(t("Industry bureau"))
    form = page.locator("form[action='/console/operator/bureau']")
    form.get_by_label(t("Name"), exact=True).fill("江北区工业和信息化局")
    form.get_by_role("button", name=t("Create the bureau")).click()
    (created,) = world.operator.audit_events(action="bureau.created")
    bureau_id = created["resource"].removeprefix("principal:")
    assert created["actor_role"] == "operator" and created["outcome"] == "ok"
    assert created["details"] == {"name": "江北区工业和信息化局"}
    notice = Msg(
        "{name} is created, with id {id}. Issue its first API token from its row below.",
        name="江北区工业和信息化局",
        id=bureau_id,
    )
    expect(page.get_by_role("status")).to_have_text(t(notice))
    expect(page.locator("form[action='/console/operator/bureau']")).to_have_count(0)
    expect(page.locator("#one-bureau")).to_be_visible()
    page.locator(f"#principal-{bureau_id}").get_by_role("button").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(t("New API token"))
    secret = page.get_by_test_id("new-token").input_value()
    headers = {"Authorization": f"Bearer {secret}"}
    me = httpx.get(f"{world.url}/v1/me", headers=headers).json()
    assert me["id"] == bureau_id and me["role"] == "bureau"
    assert httpx.get(f"{world.url}/v1/programme", headers=headers).status_code == 200
    issued = world.operator.audit_events(action="token.issued")[0]  # newest first
    assert issued["details"]["principal_id"] == bureau_id
    page.goto(f"{world.url}/console/operator/bureau")
    assert secret not in page.content()  # shown once
    if lang != "en":
        assert english_left(page, ["江北区工业和信息化局", bureau_id]) == []
    with httpx.Client(base_url=world.url, cookies={"veil_console": operator}) as http:
        second = http.post(
            "/console/operator/bureau",
            data={"csrf": csrf_token(operator), "name": "Another bureau"},
            headers={"Accept-Language": lang},
        )
    assert second.status_code == 409 and 'role="alert"' in second.text
    assert len(world.operator.audit_events(action="bureau.created")) == 1


def test_the_operator_creates_a_scoped_security_officer(
    page_in: Page, lang: str, world: World
) -> None:
    t = text(lang)
    page = page_in
    acme_id = world.acme.me()["id"]
    log_in(page, world.url, token_of(world.operator))
    page.goto(f"{world.url}/console/operator/officers")
    form = page.locator("form[action='/console/operator/officers']")
    form.get_by_label(t("Name"), exact=True).fill("Olivia")
    form.get_by_label(t("only the enterprises ticked below")).check()
    form.get_by_role("button", name=t("Create the security officer")).click()
    # Nothing ticked: refused, nothing created, not silently "every enterprise".
    expect(page.get_by_role("alert")).to_contain_text(
        t("tick at least one enterprise, or choose that the officer oversees all of them")
    )
    assert world.operator.audit_events(action="security_officer.created") == []

    form.get_by_label(re.compile("Acme Metal")).check()
    form.get_by_role("button", name=t("Create the security officer")).click()
    (created,) = world.operator.audit_events(action="security_officer.created")
    assert created["details"]["scope"] == [acme_id] and created["actor_role"] == "operator"
    officer_id = created["resource"].removeprefix("principal:")
    row = page.locator(f"#principal-{officer_id}")
    expect(row).to_contain_text("Acme Metal")
    row.get_by_role("button").click()
    secret = page.get_by_test_id("new-token").input_value()
    me = httpx.get(f"{world.url}/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me["role"] == "security_officer" and me["scope"] == [acme_id]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_other_role_reaches_the_operators_pages(world: World, lang: str) -> None:
    officer = world.operator.create_security_officer("Olivia", None)
    others = {
        "enterprise": token_of(world.acme),
        "provider": token_of(world.provider),
        "security_officer": world.operator.issue_token(officer["id"]),
    }
    enterprises = world.operator.list_enterprises()
    providers = world.operator.list_providers()
    forms = {
        "/console/operator/enterprises": {"name": "Sneaky", "slug": "sneaky"},
        "/console/operator/providers": {"name": "Sneaky"},
        "/console/operator/officers": {"name": "Sneaky", "reach": "all"},
        "/console/operator/bureau": {"name": "Sneaky"},
        "/console/operator/tokens": {"principal_id": world.provider_id},
    }
    headers = {"Accept-Language": lang}
    for role, token in others.items():
        cookies = {"veil_console": token}
        with httpx.Client(base_url=world.url, cookies=cookies, headers=headers) as http:
            for path in PAGES:
                refused = http.get(path)
                assert refused.status_code == 403, (role, path)
                assert "Sneaky" not in refused.text
            for path, data in forms.items():
                refused = http.post(path, data={"csrf": csrf_token(token), **data})
                assert refused.status_code == 403, (role, path)
    operator = token_of(world.operator)
    with httpx.Client(base_url=world.url, cookies={"veil_console": operator}) as http:
        for path, data in forms.items():  # the operator's own session, without its CSRF token
            assert http.post(path, data=data).status_code == 403, path
            forged = http.post(path, data={"csrf": csrf_token("another-session"), **data})
            assert forged.status_code == 403, path
        for days in ("soon", "100000"):  # not a number; more than VEIL_TOKEN_MAX_TTL_DAYS
            data = {
                "csrf": csrf_token(operator),
                "ttl_days": days,
                **forms["/console/operator/tokens"],
            }
            refused = http.post("/console/operator/tokens", data=data)
            assert refused.status_code == 422 and 'role="alert"' in refused.text, days
            assert 'data-testid="new-token"' not in refused.text
    assert world.operator.list_enterprises() == enterprises
    assert world.operator.list_providers() == providers
    assert world.operator.audit_events(action="bureau.created") == []
    assert len(world.operator.list_tokens(world.provider_id)) == 1
    latest = world.operator.audit_events(action="token.issued")[0]
    assert latest["details"]["principal_id"] == officer["id"]  # ours above; none refused issued
    with httpx.Client(base_url=world.url, headers=headers) as anonymous:
        for path in PAGES:
            answer = anonymous.get(path)
            assert answer.status_code == 303 and "/console/login" in answer.headers["location"]
