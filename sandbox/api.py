"""Veil's REST API (FastAPI). For now: health, and the error mapping every route will share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from keys import KeysError, KeyServerMisconfigured, KeyServerUnavailable, KeyService, LocalKeyServer
from sandbox.settings import Settings

#: One table from domain errors to HTTP statuses; more rows arrive with more domains.
ERROR_STATUS: dict[type[Exception], int] = {
    KeyServerUnavailable: 503,
    KeyServerMisconfigured: 503,
}


class Health(BaseModel):
    status: str
    key_server: str
    tenancy: str


def _status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def create_app(settings: Settings) -> FastAPI:
    """Build the app; its lifespan starts (and stops) the embedded key server if used."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        local = (
            None if not settings.embedded_key_server else LocalKeyServer(settings.keyserver_home)
        )
        config = local.start() if local else settings.external_key_server()
        app.state.keys = KeyService.connect(config)
        try:
            yield
        finally:
            if local is not None:
                local.stop()

    app = FastAPI(title="Veil", version="0.1.0", lifespan=lifespan, openapi_url="/openapi.json")

    @app.exception_handler(KeysError)
    async def keys_error(request: Request, exc: KeysError) -> JSONResponse:
        status = _status_for(exc)
        detail = str(exc) if status < 500 or status == 503 else "internal error"
        return JSONResponse(status_code=status, content={"detail": detail})

    @app.get("/v1/health", response_model=Health)
    def health(request: Request) -> Health:
        keys: KeyService = request.app.state.keys
        keys.check()
        return Health(status="ok", key_server="available", tenancy=str(keys.tenancy))

    return app
