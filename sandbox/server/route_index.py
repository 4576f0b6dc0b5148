"""Finding a request's route without trying every route before it.

Starlette tries the app's routes in order, each a regular expression; the API's routes
are many (``GET /v1/grants/{id}`` is the 26th, ``POST /v1/jobs`` the 36th, the console's
come after all of them), and trying them was a tenth of the server's CPU per request.

:class:`RouteIndex` groups the routes by the first two segments of their path where the
path fixes them (``/v1/grants/{grant_id}``: ``v1``, ``grants``) and tries, in the app's
order, only the routes of the request's group and those it could not group.  A route of
another group cannot match the request's path, so the first of these that matches fully
is the very route Starlette's scan would pick.  Anything else (no full match, a 405, a
redirect to the path with or without its trailing slash, a ``root_path``, routes changed
since the index was built) is left to Starlette's own scan, unchanged.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send

_Key = tuple[str, str]


def _key(path: str) -> _Key | None:
    """The first two segments of ``path`` when both are complete; else None."""
    parts = path.split("/", 3)  # "", first, second[, rest]
    if len(parts) < 3 or parts[0] or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _route_key(route: BaseRoute) -> _Key | None:
    """The group of every path ``route`` can match, or None where its path does not fix one."""
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    literal, param, _ = path.partition("{")
    if param:
        # The segments before the first parameter are fixed; the parameter's own is not.
        literal = literal.rsplit("/", 1)[0] + "/"
        if literal.count("/") < 3:
            return None
    return _key(literal)


class RouteIndex:
    """The innermost ASGI app in place of ``router``'s scan (``router.middleware_stack``)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._build()

    def _build(self) -> None:
        routes = list(self.router.routes)
        keyed: dict[_Key, list[int]] = {}
        loose: list[int] = []
        for index, route in enumerate(routes):
            key = _route_key(route)
            if key is None:
                loose.append(index)
            else:
                keyed.setdefault(key, []).append(index)
        self._count = len(routes)
        self._loose = [routes[i] for i in loose]
        self._groups = {
            key: [routes[i] for i in sorted(indices + loose)] for key, indices in keyed.items()
        }

    def find(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        """The route that fully matches this HTTP request first, and its child scope; None
        where Starlette's scan must decide."""
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        if len(self.router.routes) != self._count:
            self._build()
        key = _key(scope["path"])
        for route in self._groups.get(key, self._loose) if key else self._loose:
            match, child_scope = route.matches(scope)
            if match == Match.FULL:
                return route, child_scope
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.find(scope)
        if found is None:
            await self.router.app(scope, receive, send)
            return
        route, child_scope = found
        scope.setdefault("router", self.router)
        scope.update(child_scope)
        await route.handle(scope, receive, send)
