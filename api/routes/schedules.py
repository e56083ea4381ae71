"""Schedules: register a campaign as a scheduled Prefect deployment (cron or interval).

Each scheduled run continues the stored campaign by ``iterations_per_run`` iterations; a
``pesflow worker`` executes the runs. Needs a Prefect server (``PREFECT_API_URL``): without
one the answer is 422 with the reason. Implemented by :mod:`workflows.deploy`.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from .. import queries
from ..deps import DbId, SettingsDep, StoreDep, TokenDep
from ..errors import ERROR_RESPONSES

router = APIRouter(prefix="/campaigns", tags=["schedules"], responses=ERROR_RESPONSES)


class ScheduleIn(BaseModel):
    """A cron expression (five fields, one-minute granularity) or an interval in seconds."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, max_length=200, examples=["0 */6 * * *"])
    interval_seconds: float | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    timezone: str = Field(default="UTC", max_length=64, description="Time zone of the cron.")
    iterations_per_run: int = Field(default=1, ge=1, le=1000)
    work_pool: str = Field(
        default="pesflow", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )


class ScheduleOut(BaseModel):
    """The registered deployment."""

    campaign_id: int
    deployment: str = Field(description="'<flow>/<deployment>' (as run_deployment takes it).")
    deployment_id: str
    work_pool: str
    schedule: str
    parameters: dict


def _prefect_env(settings) -> None:
    from workflows.settings import configure_prefect_env, get_settings

    configure_prefect_env(
        get_settings(data_dir=settings.data_dir, database_url=settings.database_url)
    )


@router.post(
    "/{campaign_id}/schedule", response_model=ScheduleOut, status_code=status.HTTP_201_CREATED
)
def schedule_campaign(
    campaign_id: DbId, body: ScheduleIn, store: StoreDep, settings: SettingsDep, token: TokenDep
) -> ScheduleOut:
    """Register (or replace) the campaign's schedule: a Prefect deployment whose runs each
    continue the campaign by `iterations_per_run` iterations (422 without a Prefect server
    or with an invalid schedule)."""
    from workflows.deploy import DeployError, deploy_campaign

    c = queries.get_campaign(store, campaign_id)
    if (body.cron is None) == (body.interval_seconds is None):
        raise DeployError("give exactly one of 'cron' and 'interval_seconds'")
    _prefect_env(settings)
    info = deploy_campaign(
        c.name,
        cron=body.cron,
        interval=body.interval_seconds,
        timezone=body.timezone,
        iterations=body.iterations_per_run,
        work_pool=body.work_pool,
    )
    return ScheduleOut(
        campaign_id=campaign_id,
        deployment=info.name,
        deployment_id=info.id,
        work_pool=info.work_pool,
        schedule=info.schedule,
        parameters=info.parameters,
    )


@router.delete("/{campaign_id}/schedule", status_code=status.HTTP_204_NO_CONTENT)
def unschedule_campaign(
    campaign_id: DbId, store: StoreDep, settings: SettingsDep, token: TokenDep
) -> None:
    """Remove the campaign's schedule (its deployment and scheduled runs); 404 if none."""
    from database import NotFoundError
    from workflows.deploy import undeploy_campaign

    c = queries.get_campaign(store, campaign_id)
    _prefect_env(settings)
    if not undeploy_campaign(c.name):
        raise NotFoundError(f"campaign {c.name!r} has no schedule")
