"""The FastAPI application: :func:`create_app` builds it (nothing happens at import)."""

from __future__ import annotations

import asyncio
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
    from . import auth_gate, errors, openapi_doc
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
        tokens,
    )
    from .routes import structures as structures_routes

    settings = settings or get_api_settings()
    # Prefect reads its settings when first imported, by whichever module: set them now
    from workflows.settings import configure_prefect_env

    configure_prefect_env(settings)  # the API settings extend the core ones
    owns_store, owns_runner = store is None, runner is None
    store = store or Store.from_url(settings.resolved_database_url())
    runner = runner or Runner(settings.api_workers, settings.prefect_ui_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if owns_runner and not settings.api_deployment:  # runs live in this process only
            from .jobs import unqueue_stale

            unqueue_stale(store)
        yield
        if owns_runner:
            runner.shutdown(wait=False)
        from workflows import service

        # the temporary Prefect API of this process's flow runs: now, or after the last one
        await asyncio.to_thread(service.close)
        if owns_store:
            store.close()

    app = FastAPI(
        title="pesflow API",
        version="1",
        description="Active-learning campaigns for machine-learned interatomic potentials: "
        "campaigns, iterations, structures, labels, models, and actions (retrain, next "
        "iteration) that run as background flow runs. State-changing endpoints need "
        "`Authorization: Bearer <token>` (`pesflow token create`) whose scope (read < operate "
        "< admin) includes the operation's `x-required-scope`.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.store, app.state.runner = settings, store, runner
    errors.install_handlers(app)
    # auth gate (inner); the body-size limit is added last (outermost)
    app.add_middleware(auth_gate.AuthGate, prefix=API_PREFIX)
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
        tokens,
        dashboard,
    ):
        app.include_router(r.router, prefix=API_PREFIX)
    app.include_router(runs.campaign_router, prefix=API_PREFIX)
    auth_gate.check_routes(app, API_PREFIX)
    auth_gate.document_scopes(app)
    openapi_doc.document(app)
    pages.mount(app)
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    from . import middleware  # last: the outermost layers (body limit before auth)

    middleware.install(
        app,
        max_body=settings.api_max_body_bytes,
        max_upload=settings.api_max_upload_bytes,
        upload_routes=[("POST", f"{API_PREFIX}/campaigns")],
        cors=bool(settings.api_cors_origins),
    )
    return app
