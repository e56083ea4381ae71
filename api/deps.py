"""FastAPI dependencies: settings, store, runner, and bearer-token auth.

Tokens are created with ``pesflow token create`` and stored hashed (``api_tokens``).
Missing or unknown token -> 401; revoked token -> 403. Read endpoints are public unless
``PESFLOW_API_PUBLIC_READ=false``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from database import ApiTokenRecord, Store, hash_token

from .runner import Runner
from .settings import ApiSettings

__all__ = ["DbId", "ReadAccess", "StoreDep", "TokenDep", "get_runner", "get_settings", "get_store"]

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


def check_token(store: Store, token: str | None) -> ApiTokenRecord:
    """The token's record; raises 401 (missing/unknown) or 403 (revoked)."""
    if not token:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    digest = hash_token(token)
    rec = next((t for t in store.list_api_tokens() if t.token_sha256 == digest), None)
    if rec is None:
        raise _unauthorized("invalid bearer token")
    if rec.revoked_at is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"token {rec.name!r} has been revoked")
    return rec


def require_token(store: StoreDep, creds: Credentials) -> ApiTokenRecord:
    """Dependency of every state-changing endpoint."""
    return check_token(store, creds.credentials if creds else None)


def read_access(settings: SettingsDep, store: StoreDep, creds: Credentials) -> None:
    """Dependency of read endpoints: public by default, a valid token when reads are private."""
    if not settings.api_public_read:
        check_token(store, creds.credentials if creds else None)


TokenDep = Annotated[ApiTokenRecord, Depends(require_token)]
ReadAccess = Depends(read_access)

DbId = Annotated[int, Path(ge=0, le=2**31 - 1, description="Database id / index.")]
"""A path id within the range of the database's INTEGER columns (larger ones are a 422)."""
