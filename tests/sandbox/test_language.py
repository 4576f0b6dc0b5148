"""Each request is served in its reader's language: the console's switch, else Accept-Language."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from i18n.catalog import current
from sandbox.api.language import LANGUAGE_COOKIE, LanguageMiddleware


def _client() -> TestClient:
    app = FastAPI()

    @app.get("/sync")
    def in_a_thread() -> dict[str, str]:
        return {"language": current()}

    @app.get("/async")
    async def on_the_loop() -> dict[str, str]:
        return {"language": current()}

    app.add_middleware(LanguageMiddleware)
    return TestClient(app)


def test_routes_see_the_negotiated_language_and_the_response_names_it() -> None:
    client = _client()
    for path in ("/sync", "/async"):
        answer = client.get(path, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
        assert answer.json() == {"language": "zh-CN"}
        assert answer.headers["content-language"] == "zh-CN"
        assert client.get(path).json() == {"language": "en"}


def test_the_switch_cookie_wins_over_the_header_and_a_bad_one_is_ignored() -> None:
    client = _client()
    client.cookies.set(LANGUAGE_COOKIE, "en")
    assert client.get("/sync", headers={"Accept-Language": "zh-CN"}).json()["language"] == "en"
    client.cookies.set(LANGUAGE_COOKIE, "xx")
    assert client.get("/sync", headers={"Accept-Language": "zh-CN"}).json()["language"] == "zh-CN"
