"""FastAPI dependencies: settings, store, runner, and bearer-token auth with scopes.

Tokens are created with ``pesflow token create`` (or ``POST /api/v1/tokens``) and stored
hashed (``api_tokens``). Scopes: ``read`` < ``operate`` < ``admin`` (each includes the ones
before it). Missing, unknown or expired token -> 401; revoked token or a scope below the
route's -> 403. Read endpoints are public unless ``PESFLOW_API_PUBLIC_READ=false`` (then any
valid token reads). State-changing routes take :data:`OperateToken` / :data:`AdminToken` and
name the scope in their OpenAPI (``x-required-scope``), which :mod:`api.auth_gate` checks
before the request body is read.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Annotated

from fastapi import BackgroundTasks, Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from database import TOKEN_SCOPES, ApiTokenRecord, Store, hash_token
from database.models import utcnow

from .runner import Runner
from .settings import ApiSettings

__all__ = [
    "REQUIRED_SCOPE",
    "AdminToken",
    "AnyToken",
    "DbId",
    "OperateToken",
    "ReadAccess",
    "StoreDep",
    "bearer_token",
    "check_scope",
    "check_token",
    "dependency_scope",
    "get_runner",
    "get_settings",
    "get_store",
    "read_access",
    "require_scope",
    "scope_extra",
]

log = logging.getLogger(__name__)

REQUIRED_SCOPE = "x-required-scope"
"""OpenAPI extension naming the scope a route needs (``openapi_extra``)."""

TOUCH_INTERVAL = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token."""

bearer = HTTPBearer(
    auto_error=False,
    description="API token from `pesflow token create` (header `Authorization: Bearer <token>`).",
)


def get_settings(request: Request) -> ApiSettings:
    """The app's settings."""
    return request.app.state.settings


def get_store(request: Request) -> Store:
    """The app's database store."""
    return request.app.state.store


def get_runner(request: Request) -> Runner:
    """The app's background runner and run registry."""
    return request.app.state.runner


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def check_token(store: Store, token: str | None) -> ApiTokenRecord:
    """The token's record; raises 401 (missing, unknown, expired) or 403 (revoked)."""
    if not token:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    rec = store.find_api_token(token)  # by digest, through the unique index
    if rec is None or not hmac.compare_digest(rec.token_sha256, hash_token(token)):
        raise _unauthorized("invalid bearer token")
    if rec.revoked_at is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"token {rec.name!r} has been revoked")
    if rec.expired(utcnow()):
        raise _unauthorized(f"token {rec.name!r} has expired")
    return rec


def check_scope(rec: ApiTokenRecord, needed: str) -> None:
    """403 unless the token's scope includes ``needed``."""
    if TOKEN_SCOPES.index(rec.scope) < TOKEN_SCOPES.index(needed):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"token {rec.name!r} has scope {rec.scope}; this needs {needed}",
        )


def _touch(store: Store, token_id: int) -> None:
    try:
        store.touch_api_token(token_id, min_interval_s=TOUCH_INTERVAL.total_seconds())
    except Exception as exc:  # bookkeeping only: never fails a request
        log.warning("could not record the use of API token %d: %s", token_id, exc)


def _note_use(store: Store, rec: ApiTokenRecord, background: BackgroundTasks) -> None:
    """Record the use after the response (at most once a minute per token)."""
    if rec.last_used_at is None or utcnow() - rec.last_used_at >= TOUCH_INTERVAL:
        background.add_task(_touch, store, rec.id)


GATE_TOKEN = "pesflow_token"
"""Key of ``request.state`` under which :class:`api.auth_gate.AuthGate` leaves the token
record it checked, so a write request asks the store for its token once."""

_SCOPE_OF: dict[Callable[..., ApiTokenRecord], str] = {}


@cache
def require_scope(scope: str) -> Callable[..., ApiTokenRecord]:
    """The dependency for ``scope``: a valid token whose scope includes it (one function per
    scope, so FastAPI runs it once per request). Pair it with
    ``openapi_extra=scope_extra(scope)`` on the route."""
    if scope not in TOKEN_SCOPES:
        raise ValueError(f"unknown token scope {scope!r}")

    def token_with_scope(
        store: StoreDep, creds: Credentials, request: Request, background: BackgroundTasks
    ) -> ApiTokenRecord:
        rec = getattr(request.state, GATE_TOKEN, None)  # checked by the auth gate already
        if rec is None:
            rec = check_token(store, creds.credentials if creds else None)
        check_scope(rec, scope)
        _note_use(store, rec, background)
        return rec

    token_with_scope.__name__ = f"token_with_scope_{scope}"
    _SCOPE_OF[token_with_scope] = scope
    return token_with_scope


def dependency_scope(call: object) -> str | None:
    """The scope a dependency made by :func:`require_scope` checks, else ``None``."""
    return _SCOPE_OF.get(call)  # type: ignore[call-overload]


def scope_extra(scope: str) -> dict[str, str]:
    """``openapi_extra`` of a route that needs ``scope``."""
    require_scope(scope)  # an unknown scope is a ValueError here
    return {REQUIRED_SCOPE: scope}


def read_access(
    settings: SettingsDep, store: StoreDep, request: Request, background: BackgroundTasks
) -> None:
    """Dependency of read endpoints: public by default, a valid token (any scope) when reads
    are private. It reads the header itself, so public reads carry no security requirement in
    the OpenAPI (:func:`api.auth_gate.document_scopes` adds it when reads are private)."""
    if not settings.api_public_read:
        rec = check_token(store, bearer_token(request.headers.get("authorization")))
        _note_use(store, rec, background)


AnyToken = Annotated[ApiTokenRecord, Depends(require_scope("read"))]
"""Any valid token (every scope includes ``read``)."""
OperateToken = Annotated[ApiTokenRecord, Depends(require_scope("operate"))]
"""A token with scope ``operate`` or ``admin``: pause, resume, iterate, retrain, schedule."""
AdminToken = Annotated[ApiTokenRecord, Depends(require_scope("admin"))]
"""A token with scope ``admin``: create and cancel campaigns, manage tokens."""
ReadAccess = Depends(read_access)

DbId = Annotated[int, Path(ge=0, le=2**31 - 1, description="Database id / index.")]
"""A path id within the range of the database's INTEGER columns (larger ones are a 422)."""
