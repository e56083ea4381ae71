"""The FastAPI application: :func:`create_app` builds it (nothing happens at import)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from database import Store

from .runner import Runner
from .settings import ApiSettings, get_api_settings

__all__ = ["create_app"]

API_PREFIX = "/api/v1"


def create_app(
    settings: ApiSettings | None = None, *, store: Store | None = None, runner: Runner | None = None
) -> FastAPI:
    """The REST API (under ``/api/v1``) and the dashboard (``/``), bound to the configured
    database. ``store`` / ``runner`` may be given (tests); otherwise they are created here and
    closed when the app shuts down."""
    from . import errors
    from .dashboard import pages
    from .routes import (
        actions,
        campaigns,
        dashboard,
        iterations,
        labels,
        meta,
        models,
        runs,
        schedules,
    )
    from .routes import structures as structures_routes

    settings = settings or get_api_settings()
    owns_store, owns_runner = store is None, runner is None
    store = store or Store.from_url(settings.resolved_database_url())
    runner = runner or Runner(settings.api_workers, settings.prefect_ui_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if owns_runner:
            runner.shutdown(wait=False)
        if owns_store:
            store.close()

    app = FastAPI(
        title="pesflow API",
        version="1",
        description="Active-learning campaigns for machine-learned interatomic potentials: "
        "campaigns, iterations, structures, labels, models, and actions (retrain, next "
        "iteration) that run as background flow runs. State-changing endpoints need "
        "`Authorization: Bearer <token>` (`pesflow token create`).",
        lifespan=lifespan,
    )
    app.state.settings, app.state.store, app.state.runner = settings, store, runner
    errors.install_handlers(app)
    for r in (
        meta,
        campaigns,
        iterations,
        structures_routes,
        labels,
        models,
        actions,
        runs,
        schedules,
        dashboard,
    ):
        app.include_router(r.router, prefix=API_PREFIX)
    app.include_router(runs.campaign_router, prefix=API_PREFIX)
    pages.mount(app)
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
