"""Flow runs of a campaign's scheduled deployment, read from the Prefect server.

Only when a Prefect server is configured (``PREFECT_API_URL``): without one there is nothing
to list (and no temporary server is started for it). A server that does not answer gives an
empty list with the reason, never an error page.
"""

from __future__ import annotations

from . import schemas

__all__ = ["deployment_flow_runs"]


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def deployment_flow_runs(
    campaign_name: str, ui_url: str | None, limit: int = 20
) -> schemas.FlowRuns:
    """The newest flow runs of deployment ``pesflow-campaign-iterations/<campaign_name>``."""
    from workflows.service import FLOW_NAME

    if _api_url() is None:
        return schemas.FlowRuns(available=False, reason="no Prefect server (PREFECT_API_URL)")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[campaign_name])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            )
    except Exception as exc:  # the dashboard must not fail because Prefect is away
        return schemas.FlowRuns(
            available=False, reason=" ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        )
    base = ui_url.rstrip("/") if ui_url else None
    return schemas.FlowRuns(
        available=True,
        deployment=f"{FLOW_NAME}/{campaign_name}",
        runs=[
            schemas.FlowRunOut(
                id=str(r.id),
                name=r.name,
                state=r.state.type.value if r.state else None,
                state_name=r.state.name if r.state else None,
                expected_start_time=r.expected_start_time,
                start_time=r.start_time,
                end_time=r.end_time,
                parameters=dict(r.parameters or {}),
                url=f"{base}/runs/flow-run/{r.id}" if base else None,
            )
            for r in runs
        ],
    )
