"""One table from domain errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from i18n import Msg
from i18n.catalog import translate
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
from sandbox.api import validation
from sandbox.api.messages import translate_stored

log = logging.getLogger(__name__)
#: Between the reasons or problems joined into one message (full-width in Chinese).
SEPARATOR = Msg("; ")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")

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


def code_for(exc: Exception) -> str:
    """The stable, machine-readable code of a domain error (``VeilError.code``; a
    ``KeysError`` by its class: ``key_server_unavailable``…)."""
    if isinstance(exc, VeilError):
        return exc.code
    return _CAMEL.sub("_", type(exc).__name__).lower()


def error_body(
    code: str, message: Any, *, problems: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An error body: ``code``, ``message`` in the reader's language, and ``detail`` (the
    same message, for clients written before ``message`` existed)."""
    text = translate_stored(message)
    body: dict[str, Any] = {"code": code, "message": text, "detail": text}
    if problems is not None:
        body["problems"] = problems
    return body


def _translated_problems(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Domain problems (an upload's rows and columns) with ``expected`` translated."""
    return [
        p | {"expected": translate_stored(p["expected"])} if "expected" in p else p
        for p in problems
    ]


def _body(exc: Exception, status: int) -> dict[str, Any]:
    if status == 500:
        # opaque: details go to the server log only
        return error_body("internal_error", Msg("internal error"))
    code = code_for(exc)
    if isinstance(exc, Denied):
        reasons = [translate_stored(r) for r in exc.reasons]
        joined = translate(SEPARATOR).join(reasons)
        body = error_body(code, Msg("denied: {reasons}", reasons=joined))
        return body | {"reasons": reasons, "job_id": exc.job_id}
    message = exc.message if isinstance(exc, VeilError) else (exc.args[0] if exc.args else "")
    body = error_body(code, message if isinstance(message, str) else str(exc))
    problems = getattr(exc, "problems", None)
    if problems is not None:
        body["problems"] = _translated_problems(problems)
    return body


class Pages(Protocol):
    """Where errors become HTML pages instead of JSON (the web console)."""

    def wants_page(self, request: Request) -> bool: ...

    def error_page(self, request: Request, exc: Exception, status: int) -> Response: ...


# The body every error has (``_body`` and the validation handler), as the OpenAPI schema shows it.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["code", "message", "detail"],
    "properties": {
        "code": {
            "type": "string",
            "description": "stable, machine-readable (snake case): act on this, not on the "
            "message; docs/api.md lists them",
            "examples": ["not_found", "tier_not_granted", "validation_error"],
        },
        "message": {
            "type": "string",
            "description": "what was wrong and how to fix it, in the request's language "
            "(the console's veil_lang cookie, else Accept-Language; see Content-Language)",
        },
        "detail": {"type": "string", "description": "the same as message (older clients)"},
        "reasons": {
            "type": "array",
            "items": {"type": "string"},
            "description": "denials, in the request's language",
        },
        "job_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "field": {"type": "string"},
                    "row": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "column": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "expected": {"type": "string", "description": "a sentence, translated"},
                    "message": {"type": "string", "description": "field and sentence"},
                },
            },
            "description": "each problem's place and what was expected; never a value",
        },
    },
}
ERROR_DESCRIPTIONS = {
    401: "No token, or an unknown, revoked or suspended one",
    403: "The role may not call this, or the policy denied it",
    404: "Unknown, or another tenant's (the same answer)",
    409: "Conflicts with the current state",
    413: "The body is larger than the limit its `message` names (`body_too_large`)",
    422: "Invalid input: `problems` says where and what was expected",
    429: "Too many requests (`rate_limited`): retry after the `Retry-After` header's seconds",
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


def _unreadable(cause: BaseException) -> Msg:
    if isinstance(cause, UnicodeDecodeError):
        return Msg("the body is not valid JSON: it must be encoded in UTF-8")
    if isinstance(cause, RecursionError):
        return Msg("the body is nested too deeply to be read as JSON")
    return Msg("the body could not be read as JSON")


#: Codes and messages of the HTTP errors Starlette raises itself (routing, methods).
_HTTP_ERRORS = {
    404: ("no_such_endpoint", Msg("no such endpoint: the API reference is at /docs")),
    405: ("method_not_allowed", Msg("this endpoint does not take this HTTP method: see /docs")),
}


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
            body = error_body("validation_error", _unreadable(exc.__cause__))
            return JSONResponse(status_code=422, content=body)
        if pages is not None and pages.wants_page(request):
            return await http_exception_handler(request, exc)
        code, message = _HTTP_ERRORS.get(exc.status_code, (f"http_{exc.status_code}", exc.detail))
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(code, message),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes the offending input; never send values back.
        problems = validation.problems(exc.errors())
        if pages is not None and pages.wants_page(request):
            invalid = InvalidRequest(Msg("the form is incomplete or has a wrong value"))
            # The console lists each problem's place and what was expected (its own layout).
            invalid.problems = [  # type: ignore[attr-defined]
                {"location": p["location"], "expected": p["expected"]} for p in problems
            ]
            return pages.error_page(request, invalid, 422)
        sentences = translate(SEPARATOR).join(p["message"] for p in problems)
        message = Msg("the request does not match the API schema: {problems}", problems=sentences)
        return JSONResponse(
            status_code=422, content=error_body("validation_error", message, problems=problems)
        )
