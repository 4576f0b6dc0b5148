"""Rendering the console's pages: one Jinja2 environment, autoescaped, with the session."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from i18n import catalog as i18n_catalog
from policies.errors import Denied, VeilError
from policies.principals import Principal
from sandbox.console.session import csrf_token, session_token

#: The navigation of each role: (path, label).
NAV: dict[str, list[tuple[str, str]]] = {
    "enterprise": [
        ("/console/datasets", "Datasets"),
        ("/console/grants", "Grants"),
        ("/console/code", "Code approvals"),
        ("/console/receipts", "Usage receipts"),
        ("/console/tokens", "API tokens"),
    ],
    "provider": [
        ("/console/catalog", "Catalog"),
        ("/console/query", "New query"),
        ("/console/jobs", "Jobs"),
        ("/console/tokens", "API tokens"),
    ],
    "security_officer": [
        ("/console/audit", "Audit log"),
        ("/console/attention", "Attention"),
        ("/console/providers", "Providers"),
        ("/console/tokens", "API tokens"),
    ],
    "operator": [
        ("/console/audit", "Audit log"),
        ("/console/attention", "Attention"),
        ("/console/providers", "Providers"),
        ("/console/tokens", "API tokens"),
    ],
}
ROLE_NAMES = {
    "enterprise": "Enterprise",
    "provider": "Provider",
    "security_officer": "Security officer",
    "operator": "Operator",
}


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandbox.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # {% trans %} and _() read the request's language (i18n.catalog.current()); trimmed, as
    # the catalog check extracts them (i18n/check.py).
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n_catalog.gettext, i18n_catalog.ngettext, newstyle=True
    )
    env.filters["when"] = when
    env.filters["num"] = number
    return env


def when(value: datetime | str | None) -> str:
    """``2026-11-26 22:14 UTC``; '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}g}"


def error_text(exc: Exception) -> dict[str, Any]:
    """What to show next to the form that caused ``exc``: a sentence, and reasons."""
    if isinstance(exc, Denied):
        return {"message": "Refused by the policy", "reasons": list(exc.reasons)}
    problems = getattr(exc, "problems", None) or []
    reasons = [
        ", ".join(f"{k} {v}" for k, v in p.items() if k != "expected" and v)
        + f": expected {p.get('expected')}"
        for p in problems[:20]
    ]
    if isinstance(exc, VeilError):
        return {"message": str(exc), "reasons": reasons}
    return {"message": "Something went wrong on the server; the error was logged.", "reasons": []}


def page(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with the session's principal, navigation and CSRF token."""
    token = session_token(request)
    role = principal.role if principal is not None else None
    body = (
        environment()
        .get_template(template)
        .render(
            request_path=request.url.path,
            principal=principal,
            role_name=ROLE_NAMES.get(role or "", ""),
            nav=NAV.get(role or "", []),
            csrf=csrf_token(token) if token and principal is not None else "",
            **context,
        )
    )
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


#: Every console page: local assets only, no framing, no sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
