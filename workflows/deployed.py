"""The flows that Prefect deployments run: continue a stored campaign by N iterations
(:func:`campaign_iterations`), retrain its committee (:func:`retrain_campaign`).

Deployments (``pesflow deploy``, the API's ``/campaigns/{id}/schedule``) point at
:data:`campaign_iterations` by module path (``workflows.deployed.campaign_iterations``); a
``pesflow worker`` (a Prefect process worker) executes its runs. A run never starts a campaign
over: it reopens the campaign in the database given by ``PESFLOW_DATABASE_URL`` /
``PESFLOW_DATA_DIR`` and continues it with the database-driven resume of
:func:`workflows.flows.campaign_flow` (labels left ``running`` by a killed run are requeued,
finished steps are not redone), stopping after ``iterations`` more finished iterations or at
the campaign's own stop rule, whichever is first.

A scheduled run skips (and says so) a campaign that is ``converged``, ``cancelled``,
``paused`` (by a user, or at ``max_iterations`` / the label budget) or ``failed`` (a failed
campaign waits for a human: ``pesflow resume --retry-failed``), or that another process holds
(its lease: the message names the holder). Between runs a campaign waits as ``queued``; an
``interrupted`` one (its last run died) is continued.

Import this module only after :func:`workflows.settings.configure_prefect_env`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from . import lease
from .cluster import make_task_runner
from .context import CampaignHandle, open_context, open_store
from .flows import campaign_flow
from .retrain import retrain
from .settings import get_settings
from .setup import reopen_campaign

__all__ = [
    "FLOW_NAME",
    "RETRAIN_FLOW_NAME",
    "SKIP_STATUSES",
    "START_FROM",
    "campaign_iterations",
    "continue_campaign",
    "retrain_campaign",
    "retrain_flow",
]

FLOW_NAME = "pesflow-campaign-iterations"
RETRAIN_FLOW_NAME = "pesflow-retrain"
SKIP_STATUSES = ("converged", "cancelled", "paused", "failed")
START_FROM = ("created", "queued", "interrupted")


def _next_index(store, campaign_id: int) -> int:
    done = [i.index for i in store.list_iterations(campaign_id) if i.status == "done"]
    return max(done) + 1 if done else 0


@flow(name=FLOW_NAME, log_prints=False)
def campaign_iterations(
    campaign: int | str, iterations: int | None = 1, retry_failed: bool = False
) -> dict[str, Any]:
    """Continue campaign ``campaign`` (database id or name) by at most ``iterations`` finished
    iterations (``None``: until its stop rule). A campaign that is paused, converged,
    cancelled or failed, or that another process holds, is skipped with a message that says
    why (naming the holder). Returns the status, the message and the iterations before/after."""
    from database import LeaseHeldError, StatusConflictError

    settings = get_settings()
    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign, settings.data_dir)
    rec = store.get_campaign(handle.campaign_id)
    before = _next_index(store, handle.campaign_id)
    skipped = {
        "skipped": True,
        "status": rec.status,
        "iterations_before": before,
        "iterations_after": before,
    }
    if rec.status in SKIP_STATUSES:
        return {**skipped, "message": f"campaign {rec.name!r} is {rec.status}; nothing to do"}
    try:
        out = continue_campaign(
            handle, iterations, retry_failed, purpose="deployment run", start_from=START_FROM
        )
    except (LeaseHeldError, StatusConflictError) as exc:
        return {**skipped, "message": " ".join(str(exc).split())}
    return {**out, "skipped": False, "iterations_before": before}


def continue_campaign(
    handle: Any,
    iterations: int | None = 1,
    retry_failed: bool = False,
    on_running: list[Any] | None = None,
    *,
    purpose: str = "pesflow run",
    start_from: Any = None,
) -> dict[str, Any]:
    """Continue an opened campaign by at most ``iterations`` finished iterations (``None``:
    until its stop rule), through the campaign's configured task runner, holding its lease
    (``purpose`` and ``start_from`` as in :func:`workflows.lease.hold`). Used by the
    deployment flow above and by the API's embedded background runner (``on_running``:
    Prefect state hooks of the flow run, e.g. to record its id)."""
    ctx = open_context(handle)
    with lease.hold(ctx.store, ctx.campaign_id, purpose=purpose, start_from=start_from) as held:
        before = _next_index(ctx.store, ctx.campaign_id)
        cap = before + iterations if iterations is not None else None
        body = campaign_flow.with_options(
            task_runner=make_task_runner(ctx.cfg.execution), on_running=on_running or []
        )
        out = body(handle, retry_failed, cap)
        held.finish(out["status"], out["message"])
    return {**out, "iterations_after": _next_index(ctx.store, ctx.campaign_id)}


@flow(name=RETRAIN_FLOW_NAME, log_prints=False, validate_parameters=False)
def retrain_flow(
    handle: CampaignHandle,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`retrain` as a Prefect flow run."""
    return retrain(handle, max_epochs=max_epochs, max_time_s=max_time_s, extra=extra)


@flow(name=f"{RETRAIN_FLOW_NAME}-campaign", log_prints=False)
def retrain_campaign(
    campaign: int | str,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retrain campaign ``campaign`` (database id or name) of the database given by this
    process's ``PESFLOW_DATABASE_URL`` / ``PESFLOW_DATA_DIR`` (a deployment's flow)."""
    settings = get_settings()
    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign, settings.data_dir)
    return retrain_flow(handle, max_epochs, max_time_s, extra)
