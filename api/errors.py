"""Exception handlers: bad input becomes a 4xx with a one-line message, never a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from database import DatabaseInputError, DuplicateError, LabelStateError, NotFoundError

from .runner import ConflictError
from .schemas import ErrorOut

__all__ = ["ERROR_RESPONSES", "install_handlers"]


def _json(code: int, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": " ".join(str(exc).split())})


def install_handlers(app: FastAPI) -> None:
    """Map the database's and the workflow's input errors to HTTP status codes."""
    from workflows.config import ConfigError

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return _json(404, exc)

    @app.exception_handler(DuplicateError)
    async def _duplicate(request: Request, exc: DuplicateError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(LabelStateError)
    async def _state(request: Request, exc: LabelStateError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return _json(422, exc)

    @app.exception_handler(DatabaseInputError)
    async def _bad(request: Request, exc: DatabaseInputError) -> JSONResponse:
        return _json(422, exc)


_ERR = {"model": ErrorOut}
ERROR_RESPONSES: dict[int | str, dict] = {
    400: {**_ERR, "description": "Malformed request (e.g. a body that is not JSON)"},
    401: {**_ERR, "description": "Missing or invalid token"},
    403: {**_ERR, "description": "Revoked token"},
    404: {**_ERR, "description": "Not found"},
    409: {**_ERR, "description": "Conflicts with the current state"},
    422: {**_ERR, "description": "Invalid input"},
}
