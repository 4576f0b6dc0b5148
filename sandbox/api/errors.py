"""One table from domain errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

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


class Pages(Protocol):
    """Where errors become HTML pages instead of JSON (the web console)."""

    def wants_page(self, request: Request) -> bool: ...

    def error_page(self, request: Request, exc: Exception, status: int) -> Response: ...


def install(app: FastAPI, pages: Pages | None = None) -> None:
    @app.exception_handler(VeilError)
    @app.exception_handler(KeysError)
    async def domain_error(request: Request, exc: Exception) -> Response:
        status = status_for(exc)
        if pages is not None and pages.wants_page(request):
            return pages.error_page(request, exc, status)
        if status == 500:
            log.error("unmapped domain error on %s: %r", request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(status_code=status, content=_body(exc, status), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes the offending input; never send values back.
        problems = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "expected": e.get("msg")}
            for e in exc.errors()
        ]
        if pages is not None and pages.wants_page(request):
            invalid = InvalidRequest("the form is incomplete or has a wrong value")
            invalid.problems = problems  # type: ignore[attr-defined]
            return pages.error_page(request, invalid, 422)
        return JSONResponse(
            status_code=422,
            content={"detail": "the request does not match the API schema", "problems": problems},
        )
