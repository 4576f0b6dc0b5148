"""The console on the app: its routers under ``/console``, its static files, and its error
pages (``sandbox.server.app`` installs it)."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from i18n import N_
from i18n.catalog import gettext
from sandbox.console import (
    preferences,
    routes_assessments,
    routes_bureau,
    routes_enterprise,
    routes_enterprise_datasets,
    routes_kpi,
    routes_letters,
    routes_officer,
    routes_operator,
    routes_preferences,
    routes_provider,
    routes_scorecards,
    routes_session,
    routes_sources,
    routes_tokens,
)
from sandbox.console.render import error_text, page
from sandbox.console.session import PREFIX, CsrfRejected, LoginRequired

STATIC = Path(__file__).resolve().parent / "static"
ROUTERS = (
    routes_preferences,
    routes_session,
    routes_enterprise_datasets,
    routes_enterprise,
    routes_letters,
    routes_provider,
    routes_kpi,
    routes_officer,
    routes_operator,
    routes_bureau,
    routes_scorecards,
    routes_assessments,
    routes_sources,
    routes_tokens,
)


def install(app: FastAPI) -> None:
    """Serve the console (pages and local assets) from ``app``."""
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
    for module in ROUTERS:
        app.include_router(
            module.router,
            prefix=PREFIX,
            include_in_schema=False,
            dependencies=[Depends(preferences.use_request_zone)],
        )


class _Pages:
    """Errors on console paths become pages (see :func:`sandbox.api.errors.install`)."""

    def wants_page(self, request: Request) -> bool:
        return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")

    def error_page(self, request: Request, exc: Exception, status: int) -> Response:
        return error_page(request, exc, status)


PAGES = _Pages()
#: The heading of an error page, by status.
HEADINGS = {
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("Conflict"),
    503: N_("Unavailable"),
}


def error_page(request: Request, exc: Exception, status: int) -> Response:
    """A domain error on a console page, in plain words (the API answers JSON instead)."""
    if isinstance(exc, LoginRequired):
        target = request.url.path if request.method == "GET" else PREFIX + "/"
        response = RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
        response.delete_cookie("veil_console", path=PREFIX)
        return response
    if isinstance(exc, CsrfRejected):
        status = 403
    heading = gettext(HEADINGS.get(status, N_("Something is wrong")))
    return page(
        request,
        "error.html",
        None,
        status_code=status,
        heading=heading,
        error=error_text(exc),
        back=request.headers.get("referer") or PREFIX + "/",
    )
