"""The FastAPI application: routers, error handlers, and the core's lifecycle."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.types import ASGIApp

from sandbox.api import (
    docs_offline,
    errors,
    routes_assessors,
    routes_attention,
    routes_audit,
    routes_classification,
    routes_code,
    routes_collaborations,
    routes_datasets,
    routes_grants,
    routes_jobs,
    routes_keyaudit,
    routes_kpi,
    routes_letters,
    routes_nodes,
    routes_principals,
    routes_programme,
    routes_purposes,
    routes_receipts,
    routes_scorecards,
    routes_sources,
    routes_tokens,
)
from sandbox.api.language import LanguageMiddleware
from sandbox.api.limits import BodyLimit, RequestGuard
from sandbox.config.datadir import restrict_umask
from sandbox.config.settings import Settings
from sandbox.console import site as console_site
from sandbox.console.routes_enterprise import FORM_SLACK
from sandbox.console.session import COOKIE
from sandbox.runtime.veil import Veil
from sandbox.server.route_index import RouteIndex
from sandbox.service import open_veil


class Health(BaseModel):
    status: str
    key_server: str
    tenancy: str


class _GuardedApp(FastAPI):
    """FastAPI with :class:`RequestGuard` outside even Starlette's error middleware, so that
    every response, a 500 included, carries the security headers."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def build_middleware_stack(self) -> ASGIApp:
        return RequestGuard(
            LanguageMiddleware(super().build_middleware_stack()),
            self.settings,
            uploads=uploads(self.settings),
            credential_cookie=COOKIE,
        )


def uploads(settings: Settings) -> tuple[BodyLimit, ...]:
    """The endpoints that take a dataset file (or, from a node, a supply-chain analysis's
    PSI messages and sealed rows, which grow with its keys), and how much each may
    receive."""
    upload, setting = settings.max_upload_bytes, "VEIL_MAX_UPLOAD_BYTES"
    return (
        BodyLimit("POST", re.compile(r"/v1/datasets/[^/]+/versions"), upload, setting),
        BodyLimit(
            "POST",
            re.compile(r"/node/v1/collaborations/runs/[^/]+/(request|answer|intersect|rows)"),
            upload,
            setting,
        ),
        # The console's multipart forms carry their fields besides the file.
        BodyLimit(
            "POST",
            re.compile(r"/console/datasets(/detect|/[^/]+/versions)?"),
            upload + FORM_SLACK,
            setting,
        ),
    )


def create_app(settings: Settings, veil: Veil | None = None) -> FastAPI:
    """Build the app.  Without ``veil``, its lifespan starts the whole core and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if veil is not None:
            app.state.veil = veil
            yield
            return
        with open_veil(settings) as running:
            app.state.veil = running
            yield

    app = _GuardedApp(
        settings,
        title="Veil",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # docs_offline serves /docs and /redoc with their assets, no CDN
        redoc_url=None,
        description="Data usable, not visible: private analytics on enterprise data.",
    )
    errors.install(app, console_site.PAGES)
    docs_offline.install(app)
    for module in (
        routes_principals,
        routes_tokens,
        routes_datasets,
        routes_grants,
        routes_purposes,
        routes_letters,
        routes_jobs,
        routes_code,
        routes_audit,
        routes_attention,
        routes_keyaudit,
        routes_receipts,
        routes_classification,
        routes_nodes,
        routes_collaborations,
        routes_scorecards,  # before the programme's /programme/{table}
        routes_programme,
        routes_kpi,
        routes_assessors,
        routes_sources,
    ):
        app.include_router(module.router)

    @app.get("/v1/health", tags=["health"])
    def health(request: Request) -> Health:
        """Unauthenticated liveness: 200 when the key server answers, 503 when it does not."""
        running: Veil = request.app.state.veil
        running.keys.check()
        return Health(status="ok", key_server="available", tenancy=str(running.keys.tenancy))

    # Last: Starlette tries routes in order, so the API's requests match without first
    # being compared with every console path.
    console_site.install(app)
    # Each request tries only the routes that could match its path (same answer, fewer
    # regular expressions: sandbox/server/route_index.py).
    app.router.middleware_stack = RouteIndex(app.router)
    return app


def app_from_environment() -> FastAPI:
    """The app with settings from the environment: each process of ``veil serve
    --processes N`` builds its own (uvicorn's factory).  An entry point of its own (a
    server may import it by name), so it narrows the process's umask as ``veil`` does."""
    restrict_umask()
    return create_app(Settings())
