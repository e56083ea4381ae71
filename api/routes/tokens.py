"""API tokens (admin): create one (its secret is shown once), list them, revoke one."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, status
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from database.models import utcnow

from ..deps import AdminToken, StoreDep, scope_extra
from ..errors import ERROR_RESPONSES

__all__ = ["TokenCreate", "TokenCreated", "TokenOut", "new_token_secret", "router"]

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=ERROR_RESPONSES)

Scope = Literal["read", "operate", "admin"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$"


def new_token_secret() -> str:
    """A new random token (``pf_`` + 43 URL-safe characters, 256 bits)."""
    return "pf_" + secrets.token_urlsafe(32)


class TokenCreate(BaseModel):
    """A token to create: a unique name, its scope and optionally a lifetime."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN, examples=["ci"])
    scope: Scope = Field(description="read < operate < admin (each includes the ones before).")
    expires_in_s: int | None = Field(
        default=None, ge=60, le=10 * 365 * 86400, description="Lifetime, s; null: never expires."
    )


class TokenOut(BaseModel):
    """A token's record (never its secret nor its hash)."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    scope: Scope
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    """A new token with its secret, which is shown this once (only its SHA-256 is stored)."""

    token: str = Field(description="Use as `Authorization: Bearer <token>`; shown only once.")


@router.post(
    "",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=scope_extra("admin"),
)
def create_token(body: TokenCreate, store: StoreDep, token: AdminToken) -> TokenCreated:
    """Create a token (409 if the name exists); the answer holds its secret, once."""
    secret = new_token_secret()
    expires = utcnow() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    rec = store.add_api_token(body.name, secret, scope=body.scope, expires_at=expires)
    return TokenCreated(**TokenOut.model_validate(rec).model_dump(), token=secret)


@router.get("", response_model=list[TokenOut], openapi_extra=scope_extra("admin"))
def list_tokens(store: StoreDep, token: AdminToken) -> list[TokenOut]:
    """All tokens, oldest first, revoked and expired ones included."""
    return [TokenOut.model_validate(t) for t in store.list_api_tokens()]


@router.post("/{name}/revoke", response_model=TokenOut, openapi_extra=scope_extra("admin"))
def revoke_token(
    name: Annotated[str, PathParam(min_length=1, max_length=200)],
    store: StoreDep,
    token: AdminToken,
) -> TokenOut:
    """Revoke a token by name (idempotent; 404 if unknown): requests with it then get 403."""
    return TokenOut.model_validate(store.revoke_api_token(name))
