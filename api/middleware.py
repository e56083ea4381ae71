"""Request guards in front of the whole app (pure ASGI middleware, not BaseHTTPMiddleware).

:func:`install` adds them as the outermost layers, in this order from the outside:

1. :class:`SecurityHeaders` — every response (API, dashboard, static files, errors) gets
   ``Content-Security-Policy`` (no inline script: the dashboard's scripts are static files),
   ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
   ``X-Frame-Options: DENY``. The interactive API docs (``/docs``, ``/redoc``) load Swagger UI
   / ReDoc from a CDN and start them with one inline script: their policy allows that CDN and
   exactly that script (by its SHA-256), nothing else inline.
2. :class:`BodyLimit` — a request body larger than the limit is answered ``413`` before
   anything reads or parses it, and before authentication: at once from ``Content-Length``;
   a chunked body (no length) is counted while it streams. The limit is
   ``api_max_body_bytes`` (64 KiB), or ``api_max_upload_bytes`` (8 MiB) for the routes that
   take uploads (creating a campaign carries structure files). A chunked body is read ahead
   only up to the small limit before the app (and its authentication) sees the request; the
   rest of an upload is counted as the route reads it.
3. :class:`AllowedMethods` — ``OPTIONS`` on any route answers ``204`` with an ``Allow`` header
   listing every method of that path (a CORS preflight goes on to the CORS middleware when
   one is configured); ``HEAD`` works wherever ``GET`` does; a ``405`` names all methods of the
   path, not only those of the first route that matched it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "AllowedMethods",
    "BodyLimit",
    "BodyTooLarge",
    "SecurityHeaders",
    "allowed_methods",
    "install",
]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)
"""The policy of every page but the API docs: only this origin's files, no inline script or
style attribute, never inside a frame."""

_CDN = "https://cdn.jsdelivr.net"
_DOCS_CSP = (
    "default-src 'self'; script-src {scripts}; "
    "style-src 'self' " + _CDN + " https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src 'self' https://fonts.gstatic.com data:; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
_FIXED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PROBED = ("GET", "POST", "PUT", "PATCH", "DELETE")


class BodyTooLarge(HTTPException):
    """413: the request body exceeds its limit (raised while the body streams in)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


async def _answer(send: Send, status: int, detail: str | None, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode() if detail is not None else b""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if body:
        raw += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds the security headers to every HTTP response (those a response sets itself win)."""

    def __init__(self, app: ASGIApp, *, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(p for p in docs_paths if p)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if get_route_path(scope) in self.docs_paths:
            await self.app(scope, receive, _DocsPolicy(send))
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_headers(message: Message, csp: str) -> None:
    headers = MutableHeaders(scope=message)
    headers.setdefault("content-security-policy", csp)
    for key, value in _FIXED.items():
        headers.setdefault(key, value)


class _DocsPolicy:
    """Holds back a docs page (small HTML) until its inline scripts are known, then sends it
    with a policy that allows exactly those scripts (``'sha256-…'``)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        scripts = ["'self'", _CDN] + [
            "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
            for m in _INLINE_SCRIPT.finditer(body)
        ]
        _add_headers(self.start, _DOCS_CSP.format(scripts=" ".join(scripts)))
        await self.send(self.start)
        await self.send({"type": "http.response.body", "body": body})


def _content_length(headers: Headers) -> int | None:
    """The declared body length; ``-1`` for a malformed one; ``None`` when absent."""
    text = headers.get("content-length")
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else -1


class BodyLimit:
    """413 for a request body over its limit, before the app reads it (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        max_upload: int,
        upload_routes: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max(max_upload, max_body)
        self.upload_routes = frozenset((m.upper(), p.rstrip("/")) for m, p in upload_routes)

    def limit(self, scope: Scope) -> int:
        """The body limit of this request (method and path)."""
        key = (scope["method"], get_route_path(scope).rstrip("/"))
        return self.max_upload if key in self.upload_routes else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        headers = Headers(scope=scope)
        length = _content_length(headers)
        if length is not None and length < 0:
            await _answer(send, 400, "malformed Content-Length header", {})
            return
        if length is not None and length > limit:
            await _answer(send, 413, f"request body larger than {limit} bytes", {})
            return
        if length is None and "transfer-encoding" in headers:
            # read ahead at most the small limit: no more is buffered before authentication
            head: list[bytes] = []
            size, more = 0, True
            while more and size <= self.max_body:
                message = await receive()
                if message["type"] != "http.request":
                    break
                head.append(message.get("body", b""))
                size += len(head[-1])
                more = message.get("more_body", False)
            if size > limit:
                await _answer(send, 413, f"request body larger than {limit} bytes", {})
                return
            receive = _Replay(b"".join(head), more, _Counted(receive, limit, size))
        else:
            receive = _Counted(receive, limit, 0)
        tracked = _Started(send)
        try:
            await self.app(scope, receive, tracked)
        except BodyTooLarge as exc:  # raised by _Counted outside FastAPI's own handlers
            if tracked.started:
                raise
            await _answer(send, 413, exc.detail, {})


class _Started:
    """``send`` that remembers whether the response has started."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class _Counted:
    """``receive`` that raises :class:`BodyTooLarge` once more than ``limit`` bytes came."""

    def __init__(self, receive: Receive, limit: int, seen: int) -> None:
        self.receive, self.limit, self.seen = receive, limit, seen

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise BodyTooLarge(self.limit)
        return message


class _Replay:
    """``receive`` that first hands out the body read ahead, then the rest."""

    def __init__(self, head: bytes, more: bool, rest: Receive) -> None:
        self.head: bytes | None = head
        self.more, self.rest = more, rest

    async def __call__(self) -> Message:
        if self.head is None:
            return await self.rest()
        head, self.head = self.head, None
        return {"type": "http.request", "body": head, "more_body": self.more}


def allowed_methods(app: Any, scope: Scope) -> set[str]:
    """Every method the app's routes answer on this request's path (``HEAD`` with ``GET``,
    ``OPTIONS`` always); empty when no route has the path. Asks each top-level route (routes,
    included routers, mounts) whether it fully matches the path with each method, so it
    follows the framework's own matching."""
    methods: set[str] = set()
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount):  # static files: read-only
            if route.matches({**scope, "method": "GET"})[0] is not Match.NONE:
                methods |= {"GET", "HEAD"}
            continue
        for method in _PROBED:
            if (
                method not in methods
                and route.matches({**scope, "method": method})[0] is Match.FULL
            ):
                methods.add(method)
    if not methods:
        return methods
    if "GET" in methods:
        methods.add("HEAD")
    return methods | {"OPTIONS"}


def _allow_header(methods: set[str]) -> str:
    rank = {m: k for k, m in enumerate(_ORDER)}
    return ", ".join(sorted(methods, key=lambda m: (rank.get(m, len(rank)), m)))


def _has_own_head(app: Any, scope: Scope) -> bool:
    """Whether a route answers ``HEAD`` itself (static files, Starlette's own routes)."""
    return any(route.matches(dict(scope))[0] is Match.FULL for route in getattr(app, "routes", ()))


class AllowedMethods:
    """``OPTIONS`` answered generically, ``HEAD`` served by ``GET``, complete ``Allow`` on
    ``405`` (module docstring). ``cors``: pass CORS preflights on to the CORS middleware."""

    def __init__(self, app: ASGIApp, *, cors: bool = False) -> None:
        self.app = app
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app, method = scope.get("app"), scope["method"]
        if method == "OPTIONS":
            headers = Headers(scope=scope)
            preflight = "origin" in headers and "access-control-request-method" in headers
            methods = allowed_methods(app, scope)
            if methods and not (self.cors and preflight):
                await _answer(send, 204, None, {"allow": _allow_header(methods)})
                return
        elif (
            method == "HEAD"
            and not _has_own_head(app, scope)
            and "GET" in allowed_methods(app, scope)
        ):
            scope = {**scope, "method": "GET"}
            send = _HeadOnly(send)

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = allowed_methods(app, scope)
                if methods:
                    MutableHeaders(scope=message)["allow"] = _allow_header(methods)
            await send(message)

        await self.app(scope, receive, send_with_allow)


class _HeadOnly:
    """``send`` of a ``GET`` answered for ``HEAD``: the headers (with the ``GET`` body's
    length), no body."""

    def __init__(self, send: Send) -> None:
        self.send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b""}
        await self.send(message)


def install(
    app: Any,
    *,
    max_body: int,
    max_upload: int,
    upload_routes: Iterable[tuple[str, str]],
    cors: bool = False,
) -> None:
    """Add the guards to ``app`` as its outermost middleware (call after every other
    ``add_middleware``)."""
    app.add_middleware(AllowedMethods, cors=cors)
    app.add_middleware(
        BodyLimit, max_body=max_body, max_upload=max_upload, upload_routes=list(upload_routes)
    )
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(SecurityHeaders, docs_paths=[p for p in docs if p])
