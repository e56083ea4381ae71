"""Actions: retrain on all current labels, run the next iteration (both answer 202)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from .. import jobs, queries
from ..deps import DbId, RunnerDep, SettingsDep, StoreDep, TokenDep
from ..errors import ERROR_RESPONSES
from ..runner import ConflictError, Runner
from ..schemas import RetrainRequest, RunOut

router = APIRouter(prefix="/campaigns", tags=["actions"], responses=ERROR_RESPONSES)


Force = Annotated[
    bool,
    Query(
        description="Start even though the campaign is marked running (e.g. after a killed "
        "run outside this API)."
    ),
]


def submit_campaign_run(
    store,
    settings,
    runner: Runner,
    campaign_id: int,
    force: bool = False,
    iterations: int | None = None,
) -> RunOut:
    """Submit the campaign flow (deployment or background runner) after state checks."""
    c = queries.get_campaign(store, campaign_id)
    if c.status in ("converged", "cancelled"):
        raise ConflictError(f"campaign {c.name!r} is {c.status}; nothing to run")
    if c.status == "running" and not force and not runner.active(campaign_id):
        raise ConflictError(
            f"campaign {c.name!r} is marked running by another process; if that run is dead, "
            "retry with ?force=true"
        )
    if settings.api_deployment:
        name = settings.api_deployment
        run = runner.record(jobs.submit_deployment(settings, campaign_id, name, iterations))
    else:
        run = runner.submit(
            "campaign", campaign_id, jobs.campaign_job(settings, campaign_id, iterations)
        )
    return runner.out(run)


@router.post("/{campaign_id}/retrain", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED)
def retrain(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    token: TokenDep,
    body: RetrainRequest | None = Body(None),
) -> RunOut:
    """Train a new committee on every current done label (background job); 202 + run id.
    The new model appears under `/campaigns/{id}/models` when the run completes."""
    c = queries.get_campaign(store, campaign_id)
    if c.labels.get("done", 0) == 0:
        raise ConflictError(f"campaign {c.name!r} has no done labels to train on")
    body = body or RetrainRequest()
    job = jobs.retrain_job(
        settings, campaign_id, max_epochs=body.max_epochs, max_time_s=body.max_time_s
    )
    return runner.out(runner.submit("retrain", campaign_id, job))


@router.post(
    "/{campaign_id}/next-iteration", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED
)
def next_iteration(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    token: TokenDep,
    force: Force = False,
) -> RunOut:
    """Run the next iteration of the campaign; 202 + run id. Through a deployment exactly one
    iteration runs; the embedded runner continues while the stop rule says so."""
    return submit_campaign_run(store, settings, runner, campaign_id, force, iterations=1)
