"""The reader's language for each request: the console's switch, else ``Accept-Language``.

A pure ASGI middleware sets :func:`i18n.catalog.current` for the request (route
functions run in a thread pool with a copy of the context, so they see it too) and says
which language it answered in (``Content-Language``).
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from i18n.catalog import LANGUAGES, negotiate, use

#: The cookie the console's language switch sets (not a credential: a language tag).
LANGUAGE_COOKIE = "veil_lang"


def request_language(headers: dict[str, str]) -> str:
    """The language for a request with these (lower-case) headers."""
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except CookieError:  # a malformed cookie header only loses the choice
        cookies = SimpleCookie()
    chosen = cookies.get(LANGUAGE_COOKIE)
    if chosen is not None and chosen.value in LANGUAGES:
        return chosen.value
    return negotiate(headers.get("accept-language"))


class LanguageMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        language = request_language(headers)
        scope.setdefault("state", {})["language"] = language

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"content-language", language.encode()),
                    (b"vary", b"Accept-Language, Cookie"),
                ]
            await send(message)

        with use(language):
            await self.app(scope, receive, send_with_language)
