"""Authentication before the body: a pure-ASGI middleware for state-changing requests.

FastAPI reads and validates a JSON body before a route's dependencies run, so without this
an anonymous caller with a malformed body would get 422 (and the body would be parsed for
nobody). :class:`AuthGate` answers ``POST``/``PUT``/``PATCH``/``DELETE`` requests under the
API prefix from the headers alone: it finds the route the request would reach, reads the
scope it needs (``openapi_extra`` ``x-required-scope``), and checks the bearer token
(401 missing/unknown/expired with ``WWW-Authenticate: Bearer``, 403 revoked or scope too
small) before any body byte is received. The routes keep their own token dependencies
(defence in depth). The store is asked in a worker thread; no session stays open while the
request runs.

:func:`check_routes` makes sure every state-changing route names a scope that matches its
token dependency; :func:`document_scopes` gives read routes their security requirement in the
OpenAPI when reads are private (public reads carry none).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Match, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from .deps import (
    GATE_TOKEN,
    REQUIRED_SCOPE,
    bearer_token,
    check_scope,
    check_token,
    dependency_scope,
    read_access,
)

__all__ = [
    "WRITE_METHODS",
    "AuthGate",
    "api_routes",
    "check_routes",
    "document_scopes",
    "required_scope",
]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BEARER = [{"HTTPBearer": []}]


def api_routes(app: FastAPI) -> list[RouteContext]:
    """The app's path operations with their full paths, included routers flattened (since
    FastAPI 0.137 ``app.routes`` nests them; ``iter_route_contexts`` is the public walk)."""
    return [c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def required_scope(route: RouteContext) -> str | None:
    """The scope a route declares in its OpenAPI (``x-required-scope``), or ``None``."""
    return (route.openapi_extra or {}).get(REQUIRED_SCOPE)


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dep in dependant.dependencies:
        yield dep
        yield from _dependencies(dep)


def _dependency_scopes(route: RouteContext) -> set[str]:
    return {s for d in _dependencies(route.dependant) if (s := dependency_scope(d.call))}


def _reads(route: RouteContext) -> bool:
    return any(d.call is read_access for d in _dependencies(route.dependant))


def check_routes(app: FastAPI, prefix: str) -> None:
    """Raise ``RuntimeError`` (a programming error) for a route under ``prefix`` whose
    ``x-required-scope`` differs from the scope its token dependency checks, or a
    state-changing one without a scope."""
    for route in api_routes(app):
        if not route.path.startswith(prefix):
            continue
        declared, checked = required_scope(route), _dependency_scopes(route)
        where = f"{'/'.join(sorted(route.methods))} {route.path}"
        if declared is None and route.methods & WRITE_METHODS:
            raise RuntimeError(f"route {where} changes state but declares no {REQUIRED_SCOPE}")
        if declared is not None and checked != {declared}:
            raise RuntimeError(
                f"route {where}: {REQUIRED_SCOPE} {declared!r} but its token dependencies "
                f"check {sorted(checked) or 'nothing'}"
            )


def document_scopes(app: FastAPI) -> None:
    """Make the OpenAPI say who may call what: when reads are private
    (``app.state.settings.api_public_read`` false), read routes get the bearer security
    requirement and ``x-required-scope: read``; public reads carry none."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        if app.state.settings.api_public_read:
            return schema
        paths = schema.get("paths", {})
        for route in api_routes(app):
            if route.include_in_schema and _reads(route):
                for method in route.methods:
                    op = paths.get(route.path_format, {}).get(method.lower())
                    if op is not None:
                        op.setdefault(REQUIRED_SCOPE, "read")
                        op["security"] = BEARER
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _authorize(store: Any, authorization: str | None, needed: str) -> Any:
    rec = check_token(store, bearer_token(authorization))
    check_scope(rec, needed)
    return rec


class AuthGate:
    """Pure-ASGI middleware: token and scope of state-changing API requests, checked before
    the body is read (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self._routes: list[RouteContext] | None = None  # fixed once the app serves

    def _needed(self, api: FastAPI, scope: Scope) -> str | None:
        if self._routes is None:
            self._routes = api_routes(api)
        for route in self._routes:
            if route.matches(scope)[0] is Match.FULL:
                return required_scope(route)
        return None  # 404 / 405 follow without reading the body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401/403 for an unauthorised state-changing request, else pass it on."""
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        path = get_route_path(scope)
        api = scope.get("app")
        if not (path == self.prefix or path.startswith(self.prefix + "/")) or api is None:
            await self.app(scope, receive, send)
            return
        needed = self._needed(api, scope)
        if needed is not None:
            header = Headers(scope=scope).get("authorization")
            try:
                rec = await run_in_threadpool(_authorize, api.state.store, header, needed)
            except HTTPException as exc:
                response = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
                await response(scope, receive, send)
                return
            # the route's token dependency takes this record instead of asking the store again
            scope.setdefault("state", {})[GATE_TOKEN] = rec
        await self.app(scope, receive, send)
