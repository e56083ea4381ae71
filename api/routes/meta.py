"""Health and token check."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import StoreDep, TokenDep
from ..errors import ERROR_RESPONSES
from ..schemas import Health, TokenCheck

router = APIRouter(tags=["meta"], responses=ERROR_RESPONSES)


@router.get("/health", response_model=Health)
def health(store: StoreDep) -> Health:
    """The API is up; which database backend it uses."""
    from importlib.metadata import version

    return Health(status="ok", database=store.backend, version=version("pesflow"))


@router.get("/token", response_model=TokenCheck)
def whoami(token: TokenDep) -> TokenCheck:
    """Check a token: its name and creation time (401 invalid, 403 revoked)."""
    return TokenCheck(name=token.name, created_at=token.created_at)
