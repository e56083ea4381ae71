"""Schedules: register a campaign as a scheduled Prefect deployment (cron or interval).

Each scheduled run continues the stored campaign by ``iterations_per_run`` iterations; a
``pesflow worker`` executes the runs. Needs a Prefect server (``PREFECT_API_URL``): without
one the answer is 503 with the reason. Implemented by :mod:`workflows.service`.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from workflows import service
from workflows.service import omit_null

from .. import jobs, views
from ..deps import DbId, OperateToken, SettingsDep, StoreDep, scope_extra
from ..errors import ERROR_RESPONSES, PREFECT_RESPONSES

router = APIRouter(
    prefix="/campaigns", tags=["schedules"], responses={**ERROR_RESPONSES, **PREFECT_RESPONSES}
)


MAX_INTERVAL_S = 10 * 365 * 86400


class ScheduleIn(BaseModel):
    """A cron expression (five fields, one-minute granularity) or an interval in seconds."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["cron"], "not": {"required": ["interval_seconds"]}},
                {"required": ["interval_seconds"], "not": {"required": ["cron"]}},
            ]
        },
    )

    cron: str | None = Field(
        default=None, max_length=200, examples=["0 */6 * * *"], json_schema_extra=omit_null
    )
    interval_seconds: float | None = Field(
        default=None, ge=1, le=MAX_INTERVAL_S, json_schema_extra=omit_null
    )
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


@router.post(
    "/{campaign_id}/schedule",
    response_model=ScheduleOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=scope_extra("operate"),
)
def schedule_campaign(
    campaign_id: DbId,
    body: ScheduleIn,
    store: StoreDep,
    settings: SettingsDep,
    token: OperateToken,
) -> ScheduleOut:
    """Register (or replace) the campaign's schedule: a Prefect deployment whose runs each
    continue the campaign by `iterations_per_run` iterations (503 without a Prefect server,
    422 with an invalid schedule; 409 for a cancelled or converged campaign: it never runs)."""
    from ..runner import ConflictError

    c = views.get_campaign(store, campaign_id)
    if c.status in ("cancelled", "converged"):
        raise ConflictError(f"campaign {c.name!r} is {c.status}: it has nothing to schedule")
    jobs.refuse_inline_execution(store.get_campaign(campaign_id))
    if (body.cron is None) == (body.interval_seconds is None):
        raise service.DeployError("give exactly one of 'cron' and 'interval_seconds'")
    info = service.schedule_campaign(
        settings,
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


@router.delete(
    "/{campaign_id}/schedule",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=scope_extra("operate"),
)
def unschedule_campaign(
    campaign_id: DbId, store: StoreDep, settings: SettingsDep, token: OperateToken
) -> None:
    """Remove the campaign's schedule (its deployment and scheduled runs); 404 if none."""
    from database import NotFoundError

    c = views.get_campaign(store, campaign_id)
    if not service.unschedule_campaign(settings, c.name):
        raise NotFoundError(f"campaign {c.name!r} has no schedule")
