"""Dashboard pages: the campaign list and a campaign page (plots drawn client-side as SVG by
``static/plots.js`` from ``/api/v1/campaigns/{id}/dashboard``, polled while a run is active)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .. import views
from ..deps import DbId

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def mount(app: FastAPI) -> None:
    """Add the pages and ``/static`` to ``app`` (not part of the OpenAPI spec)."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        settings = request.app.state.settings
        rows = views.list_campaigns(request.app.state.store) if settings.api_public_read else []
        return templates.TemplateResponse(
            request,
            "index.html",
            {
                "campaigns": rows,
                "public": settings.api_public_read,
                "poll": settings.api_poll_seconds,
            },
        )

    @app.get("/campaigns/{campaign_id}", response_class=HTMLResponse, include_in_schema=False)
    def campaign_page(request: Request, campaign_id: DbId) -> HTMLResponse:
        settings = request.app.state.settings
        name = None
        if settings.api_public_read:
            name = views.campaign_name(request.app.state.store, campaign_id)
        return templates.TemplateResponse(
            request,
            "campaign.html",
            {"campaign_id": campaign_id, "name": name, "poll": settings.api_poll_seconds},
        )
