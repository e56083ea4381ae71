"""The flow that Prefect deployments run: continue a stored campaign by N iterations.

Deployments (``pesflow deploy``, the API's ``/campaigns/{id}/schedule``) point at
:data:`campaign_iterations` by module path (``workflows.deployed.campaign_iterations``); a
``pesflow worker`` (a Prefect process worker) executes its runs. A run never starts a campaign
over: it reopens the campaign in the database given by ``PESFLOW_DATABASE_URL`` /
``PESFLOW_DATA_DIR`` and continues it with the database-driven resume of
:func:`workflows.steps.run_campaign` (labels left ``running`` by a killed run are requeued,
finished steps are not redone), stopping after ``iterations`` more finished iterations or at
the campaign's own stop rule, whichever is first.

A scheduled run skips (and says so) a campaign that is ``converged``, ``cancelled``,
``paused`` (by a user, or at ``max_iterations`` / the label budget) or ``failed``: a failed
campaign waits for a human (``pesflow resume --retry-failed``).

Import this module only after :func:`workflows.settings.configure_prefect_env`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from . import steps
from .cluster import make_task_runner
from .flows import run_with_tasks
from .settings import get_settings
from .steps import CampaignHandle

__all__ = ["FLOW_NAME", "SKIP_STATUSES", "campaign_iterations"]

FLOW_NAME = "pesflow-campaign-iterations"
SKIP_STATUSES = ("converged", "cancelled", "paused", "failed")
CAP_PREFIX = "stopped at max_iterations="


def _next_index(store, campaign_id: int) -> int:
    done = [i.index for i in store.list_iterations(campaign_id) if i.status == "done"]
    return max(done) + 1 if done else 0


@flow(name="pesflow-campaign-body", log_prints=False, validate_parameters=False)
def _iterate(handle: CampaignHandle, cap: int | None, retry_failed: bool) -> dict[str, Any]:
    """Run the campaign loop up to iteration index ``cap`` (exclusive) with the configured
    task runner (set by the caller through ``with_options``)."""
    ctx = steps.open_context(handle)
    real_max = ctx.cfg.convergence.max_iterations
    capped = cap is not None and cap < real_max
    if capped:
        conv = ctx.cfg.convergence.model_copy(update={"max_iterations": cap})
        cfg = ctx.cfg.model_copy(update={"convergence": conv})
        ctx = steps.Context(handle, ctx.store, cfg, ctx.runtime)

    decision = run_with_tasks(ctx, retry_failed)
    status, message = decision.status, decision.message
    if capped and decision.status == "paused" and decision.message.startswith(CAP_PREFIX):
        # Our cap, not the campaign's stop rule: the campaign stays active for the next run.
        last = _next_index(ctx.store, handle.campaign_id) - 1
        status = "running"
        message = (
            f"iteration {last} done; the campaign continues at its next run "
            f"(max_iterations={real_max})"
        )
        ctx.store.set_campaign_status(handle.campaign_id, status, message)
        it = ctx.store.get_iteration(handle.campaign_id, last)
        ctx.store.update_iteration(it.id, validation={"decision": message})
    return {"stop": status != "running", "status": status, "message": message}


@flow(name=FLOW_NAME, log_prints=False)
def campaign_iterations(
    campaign: int | str, iterations: int | None = 1, retry_failed: bool = False
) -> dict[str, Any]:
    """Continue campaign ``campaign`` (database id or name) by at most ``iterations`` finished
    iterations (``None``: until its stop rule). Returns the status, the message and the
    iterations before/after."""
    settings = get_settings()
    store = steps.open_store(settings.resolved_database_url())
    handle = steps.reopen_campaign(store, campaign, settings.data_dir)
    rec = store.get_campaign(handle.campaign_id)
    before = _next_index(store, handle.campaign_id)
    if iterations is not None and rec.status in SKIP_STATUSES:
        return {
            "skipped": True,
            "status": rec.status,
            "iterations_before": before,
            "iterations_after": before,
            "message": f"campaign {rec.name!r} is {rec.status}; nothing to do",
        }
    out = continue_campaign(handle, iterations, retry_failed)
    return {**out, "skipped": False, "iterations_before": before}


def continue_campaign(
    handle: Any,
    iterations: int | None = 1,
    retry_failed: bool = False,
    on_running: list[Any] | None = None,
) -> dict[str, Any]:
    """Continue an opened campaign by at most ``iterations`` finished iterations (``None``:
    until its stop rule), through the campaign's configured task runner. Used by the
    deployment flow above and by the API's embedded background runner (``on_running``:
    Prefect state hooks of the flow run, e.g. to record its id)."""
    ctx = steps.open_context(handle)
    before = _next_index(ctx.store, ctx.campaign_id)
    cap = before + iterations if iterations is not None else None
    body = _iterate.with_options(
        task_runner=make_task_runner(ctx.cfg.execution), on_running=on_running or []
    )
    out = body(handle, cap, retry_failed)
    return {**out, "iterations_after": _next_index(ctx.store, ctx.campaign_id)}
