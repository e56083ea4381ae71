"""Runs: status of work the API submitted (flow runs and background jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from database import NotFoundError

from ..deps import DbId, ReadAccess, RunnerDep, SettingsDep, StoreDep
from ..errors import ERROR_RESPONSES
from ..schemas import FlowRuns, RunOut

router = APIRouter(
    prefix="/runs", tags=["runs"], responses=ERROR_RESPONSES, dependencies=[ReadAccess]
)


@router.get("", response_model=list[RunOut])
def list_runs(
    runner: RunnerDep,
    campaign_id: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
) -> list[RunOut]:
    """Runs submitted since the API started, newest first."""
    return [runner.out(r) for r in runner.list(campaign_id)]


@router.get("/{run_id}", response_model=RunOut)
def get_run(
    run_id: Annotated[str, PathParam(max_length=64)], runner: RunnerDep, settings: SettingsDep
) -> RunOut:
    """One run's status (a deployment run's state is read from the Prefect API)."""
    run = runner.get(run_id)
    if run is None:
        raise NotFoundError(f"unknown run id {run_id!r}")
    if settings.api_deployment and run.prefect_flow_run_id and run.active:
        from ..jobs import refresh_deployment_run

        refresh_deployment_run(run)
    return runner.out(run)


campaign_router = APIRouter(tags=["runs"], responses=ERROR_RESPONSES, dependencies=[ReadAccess])


@campaign_router.get("/campaigns/{campaign_id}/flow-runs", response_model=FlowRuns)
def campaign_flow_runs(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> FlowRuns:
    """Flow runs of the campaign's scheduled deployment on the Prefect server (scheduled and
    worker-executed runs, not only those this API submitted), newest first."""
    from .. import views
    from ..prefect_runs import deployment_flow_runs

    name = views.campaign_name(store, campaign_id)
    return deployment_flow_runs(name, settings.prefect_ui_url, limit)
