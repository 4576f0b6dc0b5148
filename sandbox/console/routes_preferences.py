"""The routes that set the reader's language and time zone (``sandbox.console.preferences``
has the cookies), and the time-zone form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from i18n.catalog import LANGUAGES
from sandbox.api.language import LANGUAGE_COOKIE
from sandbox.console.preferences import (
    PREFERENCE_MAX_AGE_S,
    TIMEZONE_COOKIE,
    configured_zone,
    safe_next,
)
from sandbox.console.render import page
from sandbox.console.session import PREFIX
from sandbox.console.timezone import valid_zone, zone_names

router = APIRouter()


def _remember(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path="/",
        max_age=PREFERENCE_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.get("/language")
def choose_language(
    request: Request,
    lang: Annotated[str, Query(max_length=16)] = "",
    next: Annotated[str, Query(max_length=2000)] = PREFIX + "/",
) -> Response:
    """Keep the chosen language (an unknown one changes nothing) and go back."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        _remember(response, request, LANGUAGE_COOKIE, lang)
    return response


@router.get("/timezone")
def choose_timezone(
    request: Request,
    tz: Annotated[str, Query(max_length=64)] = "",
    next: Annotated[str, Query(max_length=2000)] = PREFIX + "/",
) -> Response:
    """Keep the chosen time zone (one of the IANA database; another changes nothing)."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if valid_zone(tz):
        _remember(response, request, TIMEZONE_COOKIE, tz)
    return response


@router.get("/preferences")
def preferences_page(
    request: Request, next: Annotated[str, Query(max_length=2000)] = PREFIX + "/"
) -> Response:
    """The time-zone form (the language switch is on every page)."""
    return page(
        request,
        "preferences.html",
        None,
        zones=zone_names(),
        next_path=safe_next(next),
        default_zone=configured_zone(request),
    )
