"""Rendering the console's pages: one Jinja2 environment, autoescaped, with the session, in the
reader's language and time zone.

Templates mark their text with ``{% trans %}`` (trimmed) and ``_()``; the environment's
gettext looks each one up in the catalog of the request's language
(:func:`i18n.catalog.current`) when the page is rendered.  Dates are shown in the
reader's time zone (:mod:`sandbox.console.preferences`), numbers in the language's
format (Babel).
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

import jinja2
from babel.dates import format_date, format_time
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse

from i18n import N_
from i18n.catalog import babel_locale, current, gettext, ngettext, translate
from policies.capabilities import Capability, may, tenants_in_scope
from policies.errors import Denied, VeilError
from policies.principals import Principal
from sandbox.console import preferences, timezone
from sandbox.console.labels import LABELS
from sandbox.console.session import csrf_token, session_token

#: The navigation of each role: (path, label); labels are translated when a page is rendered.
NAV: dict[str, list[tuple[str, str]]] = {
    "enterprise": [
        ("/console/datasets", N_("Datasets")),
        ("/console/grants", N_("Grants")),
        ("/console/code", N_("Code approvals")),
        ("/console/receipts", N_("Usage receipts")),
        ("/console/sources", N_("Data sources")),
        ("/console/kpi", N_("KPI contracts")),
        ("/console/tokens", N_("API tokens")),
    ],
    "provider": [
        ("/console/catalog", N_("Catalog")),
        ("/console/query", N_("New query")),
        ("/console/jobs", N_("Jobs")),
        ("/console/kpi", N_("KPI contracts")),
        ("/console/scorecards", N_("Scorecards")),
        ("/console/tokens", N_("API tokens")),
    ],
    "security_officer": [
        ("/console/audit", N_("Audit log")),
        ("/console/attention", N_("Attention")),
        ("/console/providers", N_("Providers")),
        ("/console/tokens", N_("API tokens")),
    ],
    "operator": [
        ("/console/operator/enterprises", N_("Enterprises")),
        ("/console/operator/providers", N_("Provider accounts")),
        ("/console/operator/officers", N_("Security officers")),
        ("/console/operator/bureau", N_("Industry bureau")),
        ("/console/audit", N_("Audit log")),
        ("/console/attention", N_("Attention")),
        ("/console/providers", N_("Providers")),
        ("/console/tokens", N_("API tokens")),
    ],
    "bureau": [
        ("/console/programme", N_("Programme")),
        ("/console/scorecards", N_("Scorecards")),
        ("/console/tokens", N_("API tokens")),
    ],
    "assessor": [
        ("/console/assessments", N_("Assessments")),
        ("/console/tokens", N_("API tokens")),
    ],
}
ROLE_NAMES = {
    "enterprise": N_("Enterprise"),
    "provider": N_("Provider"),
    "security_officer": N_("Security officer"),
    "operator": N_("Operator"),
    "bureau": N_("Industry bureau"),
    "assessor": N_("Assessor"),
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
    # Trimmed, as the extraction (i18n.check) reads them: whitespace in a block is one space.
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_callables(  # type: ignore[attr-defined]
        lambda text: gettext(text), lambda s, p, n: ngettext(s, p, n), newstyle=True
    )
    env.filters["when"] = when
    env.filters["num"] = number
    env.filters["label"] = label
    env.filters["tr"] = translate
    return env


def when(value: datetime | str | None, seconds: bool = False) -> str:
    """A moment in the reader's time zone and language (``2026年11月26日 22:14``,
    ``Nov 26, 2026, 10:14 PM``), with its seconds if asked; '-' for nothing.  A naive value
    is UTC, as Veil stores it."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    zone, locale = timezone.current_zone(), babel_locale(current())
    day = format_date(value.astimezone(zone), "medium", locale=locale)
    time = format_time(value, "medium" if seconds else "short", tzinfo=zone, locale=locale)
    # The locale's way of joining them ("{1}, {0}" in English, "{1} {0}" in Chinese).
    return str(locale.datetime_formats["medium"]).replace("{1}", day).replace("{0}", time)


def number(value: float | int | None, digits: int = 4) -> str:
    """A number in the reader's format: integers whole, others to ``digits`` significant
    digits (``1,234``, ``0.5``); '-' for nothing."""
    if value is None:
        return "-"
    locale = babel_locale(current())
    if isinstance(value, int):
        return format_decimal(value, locale=locale)
    if not math.isfinite(value):
        return str(value)
    rounded = float(f"{value:.{digits}g}")
    return format_decimal(rounded, locale=locale, decimal_quantization=False)


def label(code: Any) -> str:
    """The reader's word for one of Veil's codes (a status, class, type, role); the code
    itself when it has none."""
    text = str(code)
    word = LABELS.get(text)
    return gettext(word) if word is not None else text


def error_text(exc: Exception) -> dict[str, Any]:
    """What to show next to the form that caused ``exc``: a sentence, and reasons, in the
    reader's language."""
    if isinstance(exc, Denied):
        return {
            "message": gettext("Refused by the policy"),
            "reasons": [translate(r) for r in exc.reasons],
        }
    problems = getattr(exc, "problems", None) or []
    reasons = [_problem(p) for p in problems[:20]]
    if isinstance(exc, VeilError):
        return {"message": translate(exc.message), "reasons": reasons}
    return {
        "message": gettext("Something went wrong on the server; the error was logged."),
        "reasons": [],
    }


#: The places a problem names, as the reader reads them.
_PLACES = {
    "column": N_("column {value}"),
    "row": N_("row {value}"),
    "rows": N_("rows {value}"),
    "field": N_("field {value}"),
}


def _problem(problem: dict[str, Any]) -> str:
    """``column temp, row 3: expected a number`` in the reader's language."""
    where = [
        gettext(_PLACES[k]).format(value=v) if k in _PLACES else f"{k} {v}"
        for k, v in problem.items()
        if k != "expected" and v
    ]
    expected = translate(problem.get("expected") or "")
    if not where:
        return gettext("expected {expected}").format(expected=expected)
    return gettext("{where}: expected {expected}").format(
        where=gettext(", ").join(where), expected=expected
    )


def page(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with the session's principal, navigation and CSRF token, in the
    reader's language and time zone."""
    token = session_token(request)
    role = principal.role if principal is not None else None
    zone = preferences.request_zone(request)
    timezone.set_zone(zone)  # error pages are rendered without the routes' dependency
    body = (
        environment()
        .get_template(template)
        .render(
            request_path=request.url.path,
            principal=principal,
            # The page asks the capability table, like the routes: ``may("…")``, and the
            # tenants in ``tenant_scope`` (None without a session).
            may=lambda capability: principal is not None and may(principal, Capability(capability)),
            tenant_scope=tenants_in_scope(principal) if principal is not None else None,
            role_name=gettext(ROLE_NAMES[role]) if role in ROLE_NAMES else "",
            nav=[(path, gettext(text)) for path, text in NAV.get(role or "", [])],
            csrf=csrf_token(token) if token and principal is not None else "",
            html_lang=current(),
            languages=preferences.switch_links(request),
            zone=zone,
            here=preferences.here(request),
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
