"""One table from domain errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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


# The body every error has (``_body`` and the validation handler), as the OpenAPI schema shows it.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "what was wrong and how to fix it"},
        "reasons": {"type": "array", "items": {"type": "string"}, "description": "denials"},
        "job_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "problems": {
            "type": "array",
            "items": {"type": "object"},
            "description": "each problem's place and what was expected; never a value",
        },
    },
}
ERROR_DESCRIPTIONS = {
    401: "No token, or an unknown, revoked or suspended one",
    403: "The role may not call this, or the policy denied it",
    404: "Unknown, or another tenant's (the same answer)",
    409: "Conflicts with the current state",
    413: "The body is larger than the limit its `detail` names",
    422: "Invalid input: `problems` says where and what was expected",
    429: "Too many requests: retry after the `Retry-After` header's seconds",
    503: "The key server is unavailable: nothing was decrypted or released",
}


def _document_errors(app: FastAPI) -> None:
    """Show the error statuses and their one body shape on every operation of the schema.

    FastAPI would document only its own validation error (``detail`` as a list), which is
    not what the handlers below send.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Error" in components:
            return schema  # built and documented already (FastAPI caches the schema)
        components["Error"] = ERROR_SCHEMA
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in schema.get("paths", {}).items():
            statuses = ERROR_DESCRIPTIONS if path != "/v1/health" else {429: "", 503: ""}
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code, description in statuses.items():
                    responses[str(code)] = {
                        "description": description or ERROR_DESCRIPTIONS[code],
                        "content": content,
                    }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _unreadable(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not valid JSON: it must be encoded in UTF-8"
    if isinstance(cause, RecursionError):
        return "the body is nested too deeply to be read as JSON"
    return "the body could not be read as JSON"


def install(app: FastAPI, pages: Pages | None = None) -> None:
    _document_errors(app)

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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 "There was an error parsing the body" for a JSON body it could
        # not decode for a reason other than its syntax; say which, as the 422 it is.
        if exc.status_code == 400 and exc.__cause__ is not None:
            return JSONResponse(status_code=422, content={"detail": _unreadable(exc.__cause__)})
        return await http_exception_handler(request, exc)

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
