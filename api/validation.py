"""Request-body validation errors as one line (the API's ``{"detail": "<message>"}`` shape).

FastAPI answers an invalid body with a list of pydantic errors; the campaign routes use
:class:`OneLineErrorsRoute` instead, so that a rejected campaign config reads like the CLI's:
``config: execution: unknown field 'dask' — campaign configs sent to the API name an
execution profile ...`` (:func:`workflows.spec.format_body_errors`).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from .errors import not_json

__all__ = ["OneLineErrorsRoute"]


def _body_model(route: APIRoute) -> type[BaseModel] | None:
    """The pydantic model of the route's body (``X`` or ``X | None``), if any."""
    annotation = route.body_field.field_info.annotation if route.body_field else None
    for tp in (annotation, *typing.get_args(annotation)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


class OneLineErrorsRoute(APIRoute):
    """An ``APIRoute`` whose 422 for an invalid request is one line naming the key path."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, with :class:`RequestValidationError` turned into one line."""
        handler = super().get_route_handler()
        body_model = _body_model(self)

        async def one_line(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                from workflows.service import format_body_errors

                errors = list(exc.errors())
                body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
                if not body_errors or body_model is None or not_json(errors):
                    raise  # the app's handler: 400 for a body that is not JSON
                return JSONResponse(
                    status_code=422, content={"detail": format_body_errors(body_errors, body_model)}
                )

        return one_line
