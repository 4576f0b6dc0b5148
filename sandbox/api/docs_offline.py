"""The API reference pages (``/docs``: Swagger UI, ``/redoc``: ReDoc), served offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which a machine without
internet access (most of the pilot cities' plants) cannot reach.  The assets come from
the pinned ``fastapi-offline`` package, which ships the swagger-ui and redoc dist files;
they are served from ``/docs/assets/`` and nothing of theirs is kept in this repository.

Each page sets its own Content-Security-Policy (kept by :class:`~sandbox.api.limits.
RequestGuard`, which adds only the headers a response lacks): scripts from this server
only, and no inline script, so Swagger UI is started by a small script of ours
(:data:`SWAGGER_INIT`) that reads its settings from the page.  ReDoc injects its styles
as ``<style>`` elements and runs its search in a ``blob:`` worker, so its page alone
allows inline styles and ``blob:`` workers.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Message, Receive, Scope, Send

from i18n import N_
from i18n.catalog import current, gettext

#: The dist files of swagger-ui (swagger-ui-bundle.js, swagger-ui.css) and redoc
#: (redoc.standalone.js), and a favicon, as the package ships them.
ASSETS_DIR: Final = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS: Final = "/docs/assets"
SWAGGER_PATH: Final = "/docs"
REDOC_PATH: Final = "/redoc"
#: Started by its own script, never an inline one (the page's policy forbids those).
SWAGGER_INIT: Final = """\
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    validatorUrl: null,  // no badge from validator.swagger.io: nothing from another host
  });
})();
"""
_BASE_POLICY: Final = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SWAGGER_POLICY: Final = f"{_BASE_POLICY}; style-src 'self'"
REDOC_POLICY: Final = f"{_BASE_POLICY}; style-src 'self' 'unsafe-inline'; worker-src blob:"

SWAGGER_TITLE = N_("Veil API reference (Swagger UI)")
REDOC_TITLE = N_("Veil API reference (ReDoc)")

_SWAGGER_PAGE: Final = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-init.js"></script>
</body>
</html>
"""
_REDOC_PAGE: Final = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
</head>
<body>
<redoc spec-url="{openapi}"></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


class _Assets(StaticFiles):
    """The dist files, revalidated by their ETag (the API's default is ``no-store``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cacheable(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"cache-control", b"no-cache")]
            await send(message)

        await super().__call__(scope, receive, send_cacheable)


def _page(template: str, title: str, openapi_url: str, policy: str) -> HTMLResponse:
    body = template.format(
        lang=html.escape(current()),
        title=html.escape(gettext(title)),
        assets=ASSETS,
        openapi=html.escape(openapi_url),
    )
    return HTMLResponse(body, headers={"content-security-policy": policy})


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` with their assets from this server.

    ``app`` must be built with ``docs_url=None, redoc_url=None`` (FastAPI's pages would
    answer first and load the CDN's assets).  Plain Starlette routes, as FastAPI's own
    pages are: they are no operation of the API."""
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> Response:
        return _page(_SWAGGER_PAGE, SWAGGER_TITLE, openapi_url, SWAGGER_POLICY)

    async def redoc(request: Request) -> Response:
        return _page(_REDOC_PAGE, REDOC_TITLE, openapi_url, REDOC_POLICY)

    async def swagger_init(request: Request) -> Response:
        return Response(
            SWAGGER_INIT, media_type="text/javascript", headers={"cache-control": "no-cache"}
        )

    app.add_route(SWAGGER_PATH, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
    # Before the mount, which would otherwise answer this path with a 404.
    app.add_route(f"{ASSETS}/swagger-init.js", swagger_init, include_in_schema=False)
    app.mount(ASSETS, _Assets(directory=ASSETS_DIR), name="docs-assets")
