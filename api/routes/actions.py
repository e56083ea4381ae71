"""Actions: retrain on all current labels, run the next iteration (both answer 202)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Body, status

from .. import jobs, views
from ..deps import DbId, OperateToken, RunnerDep, SettingsDep, StoreDep, scope_extra
from ..errors import ERROR_RESPONSES
from ..runner import ConflictError, Runner
from ..schemas import RetrainRequest, RunOut

router = APIRouter(prefix="/campaigns", tags=["actions"], responses=ERROR_RESPONSES)
log = logging.getLogger(__name__)


QUEUE_FROM = ("created", "queued", "paused", "interrupted", "failed")
"""Statuses from which the API queues a run (a converged or cancelled campaign never runs; a
running one is held by its process)."""

NO_RETRAIN = jobs.NO_RETRAIN
"""Statuses in which a retrain is refused (409): a cancelled campaign is over for good. A
converged one may be retrained (its labels are final; e.g. a longer training)."""


def submit_campaign_run(
    store,
    settings,
    runner: Runner,
    campaign_id: int,
    token_name: str,
    iterations: int | None = None,
) -> RunOut:
    """Queue the campaign flow (deployment or background runner): 409 while another process
    holds the campaign (the message names it) or when its status does not allow a run. The
    campaign becomes ``queued``; a pause or cancel sent before the run starts is honoured by
    the run (it does not start). Who queued it goes to the server log, not into the public
    status message."""
    c = store.get_campaign(campaign_id)
    if c.lease is not None and c.lease.alive:
        raise ConflictError(f"campaign {c.name!r} is held by {c.lease.holder}")
    if runner.active(campaign_id):
        raise ConflictError(f"campaign {c.name!r} already has a queued or running API run")
    jobs.refuse_inline_execution(c)
    store.transition_campaign(campaign_id, "queued", jobs.QUEUED_BY_API, allowed_from=QUEUE_FROM)
    log.info("campaign %s (%r) queued via API by token %r", campaign_id, c.name, token_name)
    if settings.api_deployment:
        name = settings.api_deployment
        run = runner.record(jobs.submit_deployment(settings, campaign_id, name, iterations))
    else:
        run = runner.submit(
            "campaign", campaign_id, jobs.campaign_job(settings, campaign_id, iterations)
        )
    return runner.out(run)


@router.post(
    "/{campaign_id}/retrain",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=scope_extra("operate"),
)
def retrain(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    token: OperateToken,
    body: RetrainRequest | None = Body(None),
) -> RunOut:
    """Train a new committee on every current done label (a Prefect flow run); 202 + run id.
    The new model appears under `/campaigns/{id}/models` when the run completes."""
    c = views.get_campaign(store, campaign_id)
    if c.status in NO_RETRAIN:
        raise ConflictError(f"campaign {c.name!r} is {c.status}: no retrain")
    if c.labels.get("done", 0) == 0:
        raise ConflictError(f"campaign {c.name!r} has no done labels to train on")
    body = body or RetrainRequest()
    if settings.api_deployment:  # a pesflow worker runs it
        if any(r.kind == "retrain" and r.active for r in runner.list(campaign_id)):
            raise ConflictError(f"campaign {c.name!r} already has a queued or running retrain")
        run = jobs.submit_retrain_deployment(
            campaign_id, max_epochs=body.max_epochs, max_time_s=body.max_time_s
        )
        return runner.out(runner.record(run))
    job = jobs.retrain_job(
        settings, campaign_id, max_epochs=body.max_epochs, max_time_s=body.max_time_s
    )
    return runner.out(runner.submit("retrain", campaign_id, job))


@router.post(
    "/{campaign_id}/next-iteration",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=scope_extra("operate"),
)
def next_iteration(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    token: OperateToken,
) -> RunOut:
    """Run the next iteration of the campaign; 202 + run id (409 while another process holds
    the campaign)."""
    return submit_campaign_run(store, settings, runner, campaign_id, token.name, iterations=1)
