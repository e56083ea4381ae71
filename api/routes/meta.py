"""Health and token check."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import AnyToken, StoreDep, scope_extra
from ..errors import ERROR_RESPONSES
from ..schemas import Health, TokenCheck

router = APIRouter(tags=["meta"], responses=ERROR_RESPONSES)


@router.get("/health", response_model=Health)
def health(store: StoreDep) -> Health:
    """The API is up; which database backend it uses."""
    from importlib.metadata import version

    return Health(status="ok", database=store.backend, version=version("pesflow"))


@router.get("/token", response_model=TokenCheck, openapi_extra=scope_extra("read"))
def whoami(token: AnyToken) -> TokenCheck:
    """Check a token (any scope): its name, scope, creation and expiry time (401 invalid or
    expired, 403 revoked)."""
    return TokenCheck(
        name=token.name,
        scope=token.scope,
        created_at=token.created_at,
        expires_at=token.expires_at,
    )
