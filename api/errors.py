"""Exception handlers: bad input becomes a 4xx with a one-line message, never a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from database import (
    DatabaseInputError,
    DuplicateError,
    LabelStateError,
    LeaseHeldError,
    NotFoundError,
    StatusConflictError,
)

from .runner import ConflictError
from .schemas import ErrorOut

__all__ = ["ERROR_RESPONSES", "PREFECT_RESPONSES", "install_handlers", "not_json"]


NOT_JSON = "request body: not valid JSON"
"""The 400 answer to a body that does not parse as JSON (every route)."""


def not_json(errors: list) -> bool:
    """Whether a request's validation errors say its body is not JSON (answered 400)."""
    return any(e.get("type") == "json_invalid" for e in errors)


def _json(code: int, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": " ".join(str(exc).split())})


def install_handlers(app: FastAPI) -> None:
    """Map the database's and the workflow's input errors to HTTP status codes."""
    from workflows.service import ConfigError, PrefectUnavailableError

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return _json(404, exc)

    @app.exception_handler(DuplicateError)
    async def _duplicate(request: Request, exc: DuplicateError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(StatusConflictError)
    async def _status(request: Request, exc: StatusConflictError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(LeaseHeldError)
    async def _held(request: Request, exc: LeaseHeldError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(LabelStateError)
    async def _state(request: Request, exc: LabelStateError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _json(409, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if not_json(exc.errors()):
            return JSONResponse(status_code=400, content={"detail": NOT_JSON})
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(PrefectUnavailableError)
    async def _unavailable(request: Request, exc: PrefectUnavailableError) -> JSONResponse:
        return _json(503, exc)

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
    403: {**_ERR, "description": "Revoked token, or its scope is below the operation's"},
    404: {**_ERR, "description": "Not found"},
    409: {**_ERR, "description": "Conflicts with the current state"},
    413: {**_ERR, "description": "Request body too large (api_max_body_bytes)"},
    422: {**_ERR, "description": "Invalid input"},
}
PREFECT_RESPONSES: dict[int | str, dict] = {
    503: {**_ERR, "description": "No Prefect server configured (PREFECT_API_URL)"},
}
"""Extra responses of the routes that need a Prefect server (schedules)."""
