"""The long jobs the API submits: run/resume a campaign (a Prefect flow run) and retrain the
committee on every current label.

The retrain is plain function calls (``mlip_core.training.train_committee`` on the campaign's
done labels from the database, checkpoint via ``mlip_core.checkpoint.save_committee``, model
row via :class:`database.Store`); ``workflows`` has no retrain flow yet (see api/README.md).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from .runner import Run
from .settings import ApiSettings

__all__ = ["campaign_job", "refresh_deployment_run", "retrain_job", "submit_deployment"]


def _workflow_settings(settings: ApiSettings):
    from workflows.settings import get_settings

    return get_settings(data_dir=settings.data_dir, database_url=settings.database_url)


def _context(settings: ApiSettings, campaign_id: int):
    """The workflow context of a campaign (store, parsed config, runtime data)."""
    from workflows.steps import open_context, open_store, reopen_campaign

    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign_id, settings.data_dir)
    return open_context(handle)


def campaign_job(settings: ApiSettings, campaign_id: int, iterations: int | None = None) -> Any:
    """A job that runs (or resumes) the campaign flow until it stops, or for at most
    ``iterations`` more iterations, holding the campaign's lease; records the Prefect flow-run
    id on the :class:`Run` as soon as the flow run starts. A pause or cancel sent after the run
    was queued is honoured: the run does not start."""

    def job(run: Run) -> dict[str, Any]:
        from database import StatusConflictError

        try:
            return _campaign_run(settings, campaign_id, iterations, run)
        except StatusConflictError as exc:  # paused / cancelled before the run started
            return {"status": exc.current, "message": f"not started: the campaign is {exc.current}"}
        except BaseException as exc:
            _unqueue(settings, campaign_id, exc)
            raise

    return job


def _campaign_run(
    settings: ApiSettings, campaign_id: int, iterations: int | None, run: Run
) -> dict[str, Any]:
    from workflows.local_api import shared_api
    from workflows.settings import configure_prefect_env

    wsettings = _workflow_settings(settings)
    configure_prefect_env(wsettings)
    ctx = _context(settings, campaign_id)
    from workflows import lease
    from workflows.deployed import continue_campaign
    from workflows.flows import campaign_flow, make_task_runner  # imports Prefect

    def on_running(flow, flow_run, state) -> None:
        run.prefect_flow_run_id = str(flow_run.id)

    purpose = f"api run {run.id[:8]}"
    # the process's own temporary Prefect API (no PREFECT_API_URL): started once, from a
    # thread that lives as long as the process, and stopped with it (workflows.local_api)
    with (
        lease.hold(ctx.store, campaign_id, purpose=purpose, start_from=("queued",)) as held,
        shared_api.use(wsettings.prefect_startup_timeout_s),
    ):
        if iterations is not None:
            return continue_campaign(ctx.handle, iterations, on_running=[on_running])
        fl = campaign_flow.with_options(
            task_runner=make_task_runner(ctx.cfg.execution), on_running=[on_running]
        )
        state = fl(ctx.handle, return_state=True)
        run.prefect_flow_run_id = str(state.state_details.flow_run_id)
        result = dict(state.result())  # raises the flow's error when it failed
        held.finish(result["status"], result["message"])
        return result


def _unqueue(settings: ApiSettings, campaign_id: int, exc: BaseException) -> None:
    """A queued run that failed before it took the campaign: the campaign must not wait as
    ``queued`` for a run that will never come."""
    from database import Store

    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    try:
        with Store.from_url(settings.resolved_database_url(), migrate=False) as store:
            store.transition_campaign(
                campaign_id,
                "interrupted",
                f"the queued API run did not start: {text}; resume it",
                allowed_from=("queued",),
            )
    except Exception:  # it got as far as the lease (which then set the status), or no database
        pass


NO_RETRAIN = ("cancelled",)
"""Statuses in which a retrain is refused (the route answers 409; a queued retrain does not
start)."""


def refuse_inline_execution(campaign) -> None:
    """409 for a campaign whose stored config carries an inline Dask or labeler-executor
    section (a config written before execution profiles, possibly sent by an API client):
    the API runs only what an operator's profile says (``execution: {profile: NAME}``) or a
    plain thread pool; such a campaign runs with ``pesflow resume`` on the operator's machine."""
    from .runner import ConflictError

    execution = (campaign.config or {}).get("execution") or {}
    inline = sorted(k for k in ("dask", "labelers") if execution.get(k))
    if inline or execution.get("task_runner") == "dask":
        raise ConflictError(
            f"campaign {campaign.name!r} stores an inline execution section "
            f"({', '.join(inline) or 'task_runner: dask'}); the API runs campaigns only through "
            "the operator's execution profiles: run it with `pesflow resume` on the operator's "
            "machine"
        )


QUEUED_BY_API = "queued via API"
"""Prefix of the status message of a campaign the API queued (see :func:`unqueue_stale`)."""


def unqueue_stale(store) -> list[str]:
    """At start-up of an API whose runs execute in its own process (no deployment): campaigns
    that an earlier API process queued and nobody holds will never run — mark them
    ``interrupted`` with the reason. Returns their names."""
    from database import StatusConflictError

    names = []
    for c in store.list_campaigns():
        if c.status != "queued" or not (c.status_message or "").startswith(QUEUED_BY_API):
            continue
        try:
            store.transition_campaign(
                c.id,
                "interrupted",
                "the API process that queued this run stopped before it started; resume it",
                allowed_from=("queued",),
            )
            names.append(c.name)
        except StatusConflictError:
            continue
    return names


def submit_deployment(
    settings: ApiSettings, campaign_id: int, name: str, iterations: int | None = None
) -> Run:
    """Submit the campaign flow through a Prefect deployment (``timeout=0``: returns at once).

    The deployment's flow is ``workflows.deployed.campaign_iterations(campaign, iterations)``:
    it reopens the campaign in the database of its own ``PESFLOW_*`` environment and
    continues it by ``iterations`` iterations (``None``: until its stop rule)."""
    from prefect.deployments import run_deployment

    params = {"campaign": campaign_id, "iterations": iterations}
    flow_run = run_deployment(name, parameters=params, timeout=0)
    return Run(
        kind="campaign",
        campaign_id=campaign_id,
        status="submitted",
        prefect_flow_run_id=str(flow_run.id),
        message=f"submitted to deployment {name}",
    )


def refresh_deployment_run(run: Run) -> Run:
    """Update a deployment-submitted run from its Prefect flow run (state, start, end)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(run.prefect_flow_run_id)
    state = fr.state.type.value if fr.state else "UNKNOWN"
    run.status = _STATES.get(state, "unknown")
    run.started_at = fr.start_time or run.started_at
    run.finished_at = fr.end_time or run.finished_at
    if fr.state is not None and fr.state.message:
        run.message = fr.state.message
    return run


_STATES = {
    "SCHEDULED": "submitted",
    "PENDING": "submitted",
    "RUNNING": "running",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CRASHED": "failed",
    "CANCELLED": "failed",
    "CANCELLING": "running",
    "PAUSED": "running",
}


def retrain_job(
    settings: ApiSettings,
    campaign_id: int,
    *,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
) -> Any:
    """A job that trains a new committee on all current done labels of the campaign
    (validation structures held out and evaluated), saves it and records a model row."""

    def job(run: Run) -> dict[str, Any]:
        from workflows.steps import train_and_record, verified_model

        t0 = time.perf_counter()
        ctx = _context(settings, campaign_id)
        status = ctx.store.get_campaign(campaign_id).status
        if status in NO_RETRAIN:  # cancelled after the retrain was accepted
            return {"status": status, "message": f"not started: the campaign is {status}"}
        prev = ctx.store.latest_model(campaign_id) if ctx.cfg.training.warm_start else None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        _, metrics = train_and_record(
            ctx,
            warm=verified_model(ctx, prev) if prev is not None else None,
            parent_model_id=prev.id if prev is not None else None,
            seed=int(time.time()) % (2**31),
            checkpoint=ctx.models_dir / f"retrain-{stamp}.pt",
            max_epochs=max_epochs,
            max_time_s=max_time_s,
            extra={"trigger": "api-retrain", "api_run_id": run.id},
        )
        rmse = metrics["val_force_rmse"]
        return {
            "model_id": metrics["model_id"],
            "n_train": metrics["n_train"],
            "n_val": metrics["n_val"],
            "val_force_rmse": rmse,
            "wall_s": time.perf_counter() - t0,
            "message": f"model {metrics['model_id']} trained on {metrics['n_train']} labels"
            + (f", validation force RMSE {rmse * 1000:.1f} meV/Å" if rmse is not None else ""),
        }

    return job
