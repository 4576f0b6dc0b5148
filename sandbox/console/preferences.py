"""The reader's language and time zone in the console: two cookies (``routes_preferences``
sets them).

The language is negotiated for every request by :mod:`sandbox.api.language` (the
``veil_lang`` cookie, else ``Accept-Language``); the switch on every page only sets that
cookie.  The time zone is this module's: the ``veil_tz`` cookie when it names a zone
of the IANA database, else ``VEIL_TIMEZONE`` (``Asia/Shanghai`` by default).  It is kept
for the request in a context variable, so that every date the console shows or reads
(``render.when``, the forms' date fields) uses the same zone.

Neither cookie is a credential, so the switches are plain links and GET forms that work
on the login page too; they redirect only to a console path (never to another site).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from fastapi import Request

from i18n.catalog import LANGUAGES
from sandbox.console.session import PREFIX
from sandbox.console.timezone import DEFAULT_TIMEZONE, set_zone, valid_zone

#: The cookie of the time-zone setting (an IANA name such as ``Asia/Shanghai``).
TIMEZONE_COOKIE: Final = "veil_tz"
#: A choice lasts a year (it is a preference, not a session).
PREFERENCE_MAX_AGE_S: Final = 365 * 24 * 3600
#: What the switch shows for each language: its own name, in its own script.
LANGUAGE_NAMES: Final = {"zh-CN": "中文", "en": "English"}


def configured_zone(request: Request) -> str:
    """``VEIL_TIMEZONE`` of the running Veil (its settings are validated at start)."""
    veil = getattr(request.app.state, "veil", None)
    configured = getattr(getattr(veil, "settings", None), "timezone", None)
    return valid_zone(configured) or DEFAULT_TIMEZONE


def request_zone(request: Request) -> str:
    """The time zone for this request: the reader's setting, else the configured one."""
    return valid_zone(request.cookies.get(TIMEZONE_COOKIE)) or configured_zone(request)


async def use_request_zone(request: Request) -> None:
    """A dependency of every console route: dates in this request use the reader's zone.

    ``async`` on purpose: a sync dependency runs in a worker thread, and what it sets in
    the context would not reach the route function.
    """
    set_zone(request_zone(request))


def safe_next(target: str | None) -> str:
    """Only a console path: never a redirect to another site."""
    target = target or ""
    if (
        (target == PREFIX or target.startswith(PREFIX + "/"))
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(c) < 32 for c in target)
    ):
        return target
    return PREFIX + "/"


def here(request: Request) -> str:
    """This page's path and query, for a switch to come back to."""
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def switch_links(request: Request) -> list[tuple[str, str, str]]:
    """(language, its name, the link that switches to it) for the switch on every page."""
    back = here(request)
    return [
        (
            lang,
            LANGUAGE_NAMES[lang],
            f"{PREFIX}/language?" + urlencode({"lang": lang, "next": back}),
        )
        for lang in ("zh-CN", "en")
        if lang in LANGUAGES
    ]
