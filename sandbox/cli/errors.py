"""Every failure of a ``veil`` command as one message, printed once, in the reader's language.

:func:`describe` turns an exception into a :class:`Failure` (a stable ``code``, the same as
the API's where the API answered, a sentence that says what happened and what to do, and
an exit status); :func:`report` prints it: one line on standard error (``error: …``), or
under ``--json`` one JSON object on standard error (``{"error": {"code", "message"}}``),
standard output staying empty. Exit statuses: 1 an error, 2 a usage error (Click's), 130
interrupted.

An exception nobody expected is one line too, with where its traceback was written;
``VEIL_DEBUG=1`` prints the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import ValidationError
from rich.text import Text

from i18n import N_, Msg
from i18n.catalog import translate
from keys import KeysError, KeyServerUnavailable
from policies.errors import VeilError
from sandbox.cli.output import err_console
from sandbox.client import ApiError

#: Exit statuses (documented in docs/cli.md).
ERROR = 1
USAGE = 2
INTERRUPTED = 130

#: The code of an API error whose body has none (an older server): from its status.
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


class CliError(Exception):
    """An expected failure found by the CLI itself (a file it cannot use, a bad value)."""

    def __init__(self, message: str, *, code: str, status: int = ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass
class Failure:
    """What to tell the user: ``message`` is already in their language."""

    code: str
    message: str
    status: int = ERROR
    details: list[str] = field(default_factory=list)  # reasons, problems: one line each
    extra: dict[str, Any] = field(default_factory=dict)  # more fields for --json


def spaced(first: str, second: str) -> str:
    """``first`` and ``second`` as one text: no space after a wide (Chinese) character."""
    wide = first[-1:] and unicodedata.east_asian_width(first[-1]) in ("W", "F")
    return first + ("" if wide else " ") + second


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; a missing or invalid file is a :class:`CliError`
    that names the file and the place (line, column), never its contents."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(
            Msg("{path} is not UTF-8 text: save it as UTF-8 JSON", path=str(path)),
            code="invalid_json",
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            Msg(
                "{path} is not valid JSON: {problem} at line {line}, column {column}",
                path=str(path),
                problem=translate(exc.msg),  # the parser's words: "Expecting value"
                line=exc.lineno,
                column=exc.colno,
            ),
            code="invalid_json",
        ) from None


def describe(exc: BaseException) -> Failure | None:
    """The failure ``exc`` means, or None for an unexpected exception (a bug)."""
    if isinstance(exc, CliError):
        return Failure(exc.code, translate(exc.message), exc.status)
    if isinstance(exc, click.ClickException):
        return _usage(exc)
    if isinstance(exc, ApiError):
        return _api(exc)
    if isinstance(exc, httpx.TransportError):
        return _transport(exc)
    if isinstance(exc, VeilError):
        return Failure(exc.code, translate(exc.message))
    if isinstance(exc, KeysError):
        code = "key_server_unavailable" if isinstance(exc, KeyServerUnavailable) else "key_server"
        return Failure(code, translate(str(exc)))
    if isinstance(exc, ValidationError):
        return _settings(exc)
    if isinstance(exc, TimeoutError | ConnectionError):  # before OSError, their base
        return Failure("timeout" if isinstance(exc, TimeoutError) else "connection", str(exc))
    if isinstance(exc, OSError):
        return _os(exc)
    return None


def _usage(exc: click.ClickException) -> Failure:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += translate(Msg(" (help: `{command} -h`)", command=ctx.command_path or "veil"))
    return Failure("usage", message, exc.exit_code)


def _api(exc: ApiError) -> Failure:
    code = exc.code or STATUS_CODES.get(exc.status, "error" if exc.status < 500 else "server")
    lines = exc.message.splitlines() or [exc.message]
    details = [f"- {reason}" for reason in exc.reasons]
    if exc.problems:
        details += [f"- {_problem(p)}" for p in exc.problems[:20]]
        if len(exc.problems) > 20:
            details.append(translate(Msg("… and {n} more", n=len(exc.problems) - 20)))
    else:  # the message's own lines (e.g. problems written into it), each shown once
        details += [line.strip() for line in lines[1:] if line.strip()]
    extra: dict[str, Any] = {"status": exc.status}
    extra |= {"reasons": exc.reasons} if exc.reasons else {}
    extra |= {"problems": exc.problems} if exc.problems else {}
    extra |= {"job_id": exc.job_id} if exc.job_id else {}
    # "2 problems:" heads the lines below (in Chinese, with a full-width colon).
    headline = lines[0].rstrip(":\uff1a") if lines else ""
    return Failure(code, headline, ERROR, details, extra)


def _problem(problem: dict[str, Any]) -> str:
    """``column 'temp', row 2: expected a number``, without an empty place."""
    where = []
    if problem.get("column"):
        where.append(translate(Msg("column '{column}'", column=problem["column"])))
    if problem.get("row") is not None:
        where.append(translate(Msg("row {row}", row=problem["row"])))
    if problem.get("location"):
        where.append(str(problem["location"]))
    what = translate(str(problem.get("expected") or "?"))  # the server's words, if known
    if not where:
        return translate(Msg("expected {what}", what=what))
    place = translate(N_(", ")).join(where)
    return translate(Msg("{where}: expected {what}", where=place, what=what))


def _transport(exc: httpx.TransportError) -> Failure:
    try:
        url = exc.request.url
        where = f"{url.scheme}://{url.netloc.decode()}"
    except RuntimeError:  # raised without a request
        where = os.environ.get("VEIL_URL", "the server")
    if isinstance(exc, httpx.TimeoutException):
        message = Msg(
            "Veil at {url} did not answer in time: try again, or look at the server's log",
            url=where,
        )
        return Failure("timeout", translate(message))
    message = Msg(
        "cannot reach Veil at {url}: is `veil serve` running? (start it, or set VEIL_URL)",
        url=where,
    )
    return Failure("unreachable", translate(message))


def _settings(exc: ValidationError) -> Failure:
    """The VEIL_... variables; their values are not shown."""
    details = []
    for error in exc.errors():
        where = f"VEIL_{str(error['loc'][0]).upper()}" if error["loc"] else "settings"
        details.append(f"- {where}: {error['msg']}")
    message = Msg("the settings are not valid: check these VEIL_... environment variables")
    return Failure("invalid_settings", translate(message), USAGE, details)


def _os(exc: OSError) -> Failure:
    path = str(exc.filename) if exc.filename is not None else "?"
    if isinstance(exc, FileNotFoundError):
        return Failure(
            "file_not_found", translate(Msg("no such file: {path}: check the path", path=path))
        )
    if isinstance(exc, PermissionError):
        message = Msg(
            "permission denied: {path}: check its owner and permissions (Veil's data "
            "directory belongs to the user who ran `veil init`)",
            path=path,
        )
        return Failure("permission_denied", translate(message))
    if isinstance(exc, IsADirectoryError):
        message = Msg("{path} is a directory: give a file", path=path)
        return Failure("is_a_directory", translate(message))
    reason = exc.strerror or type(exc).__name__
    message = Msg("cannot use {path}: {reason}", path=path, reason=reason)
    return Failure("os_error", translate(message))


def report(failure: Failure, as_json: bool) -> None:
    """Print ``failure`` once on standard error: one JSON object, or ``error: …`` lines."""
    if as_json:
        body = {"code": failure.code, "message": failure.message} | failure.extra
        if failure.details and "problems" not in body and "reasons" not in body:
            body["details"] = failure.details
        sys.stderr.write(json.dumps({"error": body}, ensure_ascii=False) + "\n")
        return
    # Text, not markup: a message may hold brackets (an [Errno], a list) that are not styles.
    status = failure.extra.get("status")  # an API error: its HTTP status, as "error (404):"
    prefix = translate(Msg("error ({status}):", status=status) if status else Msg("error:"))
    line = spaced(prefix, failure.message)
    err_console.print(Text.assemble((prefix, "red"), line[len(prefix) :]))
    for line in failure.details:
        err_console.print(Text("  " + line))


def report_unexpected(exc: BaseException, as_json: bool) -> None:
    """A bug: one line, and where its traceback is (or the traceback, with VEIL_DEBUG=1)."""
    if os.environ.get("VEIL_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc)
        return
    trace = "".join(traceback.format_exception(exc))
    where = None
    try:
        handle, name = tempfile.mkstemp(prefix="veil-error-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(trace)
        where = name
    except OSError:
        pass
    message = Msg(
        "unexpected error ({kind}); its traceback is in {where} (or run again with "
        "VEIL_DEBUG=1 to see it); please report it",
        kind=type(exc).__name__,
        where=where or "-",
    )
    report(Failure("internal_error", translate(message)), as_json)
