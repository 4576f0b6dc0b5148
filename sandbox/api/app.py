"""The FastAPI application: routers, error handlers, and the core's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel

from sandbox import console
from sandbox.api import (
    errors,
    routes_attention,
    routes_audit,
    routes_code,
    routes_datasets,
    routes_grants,
    routes_jobs,
    routes_keyaudit,
    routes_principals,
    routes_receipts,
)
from sandbox.core import Veil, open_veil
from sandbox.settings import Settings


class Health(BaseModel):
    status: str
    key_server: str
    tenancy: str


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

    app = FastAPI(
        title="Veil",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        description="Data usable, not visible: private analytics on enterprise data.",
    )
    errors.install(app, console.PAGES)
    console.install(app)
    for module in (
        routes_principals,
        routes_datasets,
        routes_grants,
        routes_jobs,
        routes_code,
        routes_audit,
        routes_attention,
        routes_keyaudit,
        routes_receipts,
    ):
        app.include_router(module.router)

    @app.get("/v1/health", tags=["health"])
    def health(request: Request) -> Health:
        """Unauthenticated liveness: 200 when the key server answers, 503 when it does not."""
        running: Veil = request.app.state.veil
        running.keys.check()
        return Health(status="ok", key_server="available", tenancy=str(running.keys.tenancy))

    return app
