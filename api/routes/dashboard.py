"""The campaign page's data in one response (what the dashboard draws and polls)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .. import views
from ..deps import DbId, ReadAccess, RunnerDep, SettingsDep, StoreDep
from ..errors import ERROR_RESPONSES
from ..schemas import DashboardData

router = APIRouter(tags=["dashboard"], responses=ERROR_RESPONSES, dependencies=[ReadAccess])


def dashboard_data(store, settings, runner, campaign_id: int, histogram_iteration=None):
    """Assemble :class:`DashboardData` (also used by the benchmark)."""
    agg = views.label_aggregate(store, campaign_id)  # one GROUP BY for all label counts
    campaign = views.get_campaign(store, campaign_id, agg)
    its = views.iterations(store, campaign_id)
    runs = [runner.out(r) for r in runner.list(campaign_id)[:20]]
    return DashboardData(
        campaign=campaign,
        iterations=its,
        labels_new=[it.labels_new for it in its],
        labels_cumulative=[it.labels_total for it in its],
        failures_by_kind=views.failures_by_kind(store, campaign_id, its, agg),
        histogram=views.histogram(store, campaign_id, histogram_iteration),
        most_uncertain=views.most_uncertain(store, campaign_id, 10),
        models=views.list_models(store, campaign_id),
        runs=runs,
        poll_seconds=settings.api_poll_seconds,
        active=campaign.status == "running" or runner.active(campaign_id),
    )


@router.get("/campaigns/{campaign_id}/dashboard", response_model=DashboardData)
def get_dashboard(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    histogram_iteration: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
) -> DashboardData:
    """Iteration metrics, label counts, failures by kind, the uncertainty histogram, the most
    uncertain structures, models and runs of one campaign."""
    return dashboard_data(store, settings, runner, campaign_id, histogram_iteration)
