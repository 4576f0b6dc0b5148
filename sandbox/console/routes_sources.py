"""The enterprise's data sources page: each source's schedule, last run, version, failures and
last error, and a button that runs it now (``docs/sources.md``). Declaring and mapping stay with
the CLI and the API (JSON files)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.console.render import error_text, page
from sandbox.console.routes_enterprise import ERRORS, EnterpriseDep, done_redirect, notice_text
from sandbox.console.session import CsrfDep
from sandbox.sources import declarations, runs

router = APIRouter()


@router.get("/sources")
def sources_page(
    request: Request, veil: VeilDep, owner: EnterpriseDep, notice: str | None = None
) -> Response:
    sources = [v.as_json() for v in declarations.list_sources(veil, owner)]
    return page(
        request,
        "enterprise_sources.html",
        owner,
        sources=sources,
        error=None,
        notice=notice_text(notice),
    )


@router.post("/sources/{dataset_id}/run", dependencies=[CsrfDep])
def run_now(request: Request, veil: VeilDep, owner: EnterpriseDep, dataset_id: str) -> Response:
    """Run the source now; its outcome is the source's state the page shows."""
    try:
        outcome = runs.run_now(veil, owner, dataset_id)
    except ERRORS as exc:
        sources = [v.as_json() for v in declarations.list_sources(veil, owner)]
        return page(
            request,
            "enterprise_sources.html",
            owner,
            status_for(exc),
            sources=sources,
            error=error_text(exc),
            notice=None,
        )
    return done_redirect("/sources", "source-queued" if outcome.queued else "source-ran")
