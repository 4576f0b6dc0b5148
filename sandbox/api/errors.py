"""One table from domain errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from keys import KeysError, KeyServerMisconfigured, KeyServerUnavailable
from policies.errors import (
    Conflict,
    Denied,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthenticated,
    VeilError,
)

log = logging.getLogger(__name__)

ERROR_STATUS: dict[type[Exception], int] = {
    InvalidRequest: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    Denied: 403,
    NotFound: 404,
    Conflict: 409,
    KeyServerUnavailable: 503,
    KeyServerMisconfigured: 503,
}


def status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def _body(exc: Exception, status: int) -> dict[str, Any]:
    if status == 500:
        return {"detail": "internal error"}  # opaque: details go to the server log only
    body: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, Denied):
        body |= {"reasons": list(exc.reasons), "job_id": exc.job_id}
    problems = getattr(exc, "problems", None)
    if problems is not None:
        body["problems"] = problems
    return body


def install(app: FastAPI) -> None:
    @app.exception_handler(VeilError)
    @app.exception_handler(KeysError)
    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        if status == 500:
            log.error("unmapped domain error on %s: %r", request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(status_code=status, content=_body(exc, status), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the offending input; never send values back.
        problems = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "expected": e.get("msg")}
            for e in exc.errors()
        ]
        return JSONResponse(
            status_code=422,
            content={"detail": "the request does not match the API schema", "problems": problems},
        )
