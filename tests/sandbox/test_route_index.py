"""The route index (sandbox/server/route_index.py) picks, for every path of the app, the
route Starlette's own scan of all routes picks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Match, Route, Router

from sandbox.config.settings import Settings
from sandbox.server.app import create_app
from sandbox.server.route_index import RouteIndex


def _scan(router: Router, scope: dict[str, Any]) -> Any:
    """Starlette's choice: the first route that matches fully."""
    for route in router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _paths(router: Router) -> list[str]:
    """Every route's path with sample values for its parameters, and near misses."""
    paths: set[str] = {"/", "/v1", "/v1/", "/v1//grants", "/nowhere/at/all", "/docs/assets/x"}
    for route in router.routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        sample = re.sub(r"\{[^}]*\}", "p1", path) or "/"
        paths |= {sample, sample + "/", sample.rstrip("/") + "/extra", sample.upper()}
    return sorted(paths)


def test_the_index_picks_the_route_the_full_scan_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_DATA_DIR", str(tmp_path / "veil"))
    app = create_app(Settings())
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    checked = 0
    for path in _paths(app.router):
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            scope = _scope(method, path)
            expected = _scan(app.router, scope)
            found = index.find(scope)
            assert (found[0] if found else None) is expected, (method, path)
            checked += expected is not None
    assert checked > 100  # the app's routes were reached, not only misses


def test_routes_added_after_the_index_was_built_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_DATA_DIR", str(tmp_path / "veil"))
    app = create_app(Settings())

    @app.get("/v1/grants/{grant_id}/later")
    def later() -> dict[str, str]:
        return {}

    scope = _scope("GET", "/v1/grants/p1/later")
    found = app.router.middleware_stack.find(scope)
    assert found is not None and found[0] is _scan(app.router, scope)


def test_a_route_it_cannot_group_still_wins_where_it_comes_first() -> None:
    def endpoint(_request: Any) -> None:
        return None

    first = Route("/{section}/grants/{grant_id}", endpoint)  # no fixed first segment
    second = Route("/v1/grants/{grant_id}", endpoint)
    router = Router([first, second])
    found = RouteIndex(router).find(_scope("GET", "/v1/grants/p1"))
    assert found is not None and found[0] is first
