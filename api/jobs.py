"""The long work the API submits, through the workflows facade (:mod:`workflows.service`):
running a campaign and retraining its committee are Prefect flow runs. With a deployment
configured (``PESFLOW_API_DEPLOYMENT``) both are submitted to it and a ``pesflow worker``
executes them; otherwise the flow runs in a thread of the API's :class:`~api.runner.Runner`
against the process's temporary Prefect API, and its flow-run id is recorded on the
:class:`~api.runner.Run` as soon as it starts.
"""

from __future__ import annotations

from typing import Any

from workflows import service

from .runner import Run
from .settings import ApiSettings

__all__ = [
    "campaign_job",
    "refresh_deployment_run",
    "retrain_job",
    "submit_deployment",
    "submit_retrain_deployment",
]


def _recorder(run: Run) -> Any:
    def record(flow_run_id: str) -> None:
        run.prefect_flow_run_id = flow_run_id

    return record


def campaign_job(settings: ApiSettings, campaign_id: int, iterations: int | None = None) -> Any:
    """A job that runs (or resumes) the campaign flow until it stops, or for at most
    ``iterations`` more iterations, holding the campaign's lease; records the Prefect flow-run
    id on the :class:`Run` as soon as the flow run starts. A pause or cancel sent after the run
    was queued is honoured: the run does not start."""

    def job(run: Run) -> dict[str, Any]:
        from database import StatusConflictError

        try:
            return service.run_campaign(
                settings,
                campaign_id,
                iterations,
                purpose=f"api run {run.id[:8]}",
                on_flow_run=_recorder(run),
            )
        except StatusConflictError as exc:  # paused / cancelled before the run started
            return {"status": exc.current, "message": f"not started: the campaign is {exc.current}"}
        except BaseException as exc:
            _unqueue(settings, campaign_id, exc)
            raise

    return job


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


NO_RETRAIN = service.NO_RETRAIN
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
    """Submit the campaign flow through Prefect deployment ``name`` (returns at once); see
    :func:`workflows.service.submit_campaign_run`."""
    flow_run_id = service.submit_campaign_run(name, campaign_id, iterations)
    return Run(
        kind="campaign",
        campaign_id=campaign_id,
        status="submitted",
        prefect_flow_run_id=flow_run_id,
        message=f"submitted to deployment {name}",
    )


def submit_retrain_deployment(
    campaign_id: int, *, max_epochs: int | None = None, max_time_s: float | None = None
) -> Run:
    """Submit a retrain through the API's retrain deployment (returns at once); see
    :func:`workflows.service.submit_retrain`."""
    run = Run(kind="retrain", campaign_id=campaign_id, status="submitted")
    run.prefect_flow_run_id = service.submit_retrain(
        campaign_id,
        max_epochs=max_epochs,
        max_time_s=max_time_s,
        extra={"api_run_id": run.id},
    )
    run.message = f"submitted to deployment {service.API_RETRAIN_DEPLOYMENT}"
    return run


def refresh_deployment_run(run: Run) -> Run:
    """Update a deployment-submitted run from its Prefect flow run (state, start, end)."""
    info = service.flow_run_info(run.prefect_flow_run_id)
    run.status = _STATES.get(info.state, "unknown")
    run.started_at = info.start_time or run.started_at
    run.finished_at = info.end_time or run.finished_at
    if info.message:
        run.message = info.message
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
    """A job that retrains the campaign's committee on all current done labels as a Prefect
    flow run (:func:`workflows.service.retrain`); a campaign cancelled after the retrain was
    accepted is not trained (``{"status": "cancelled", "message": ...}``)."""

    def job(run: Run) -> dict[str, Any]:
        return service.retrain(
            settings,
            campaign_id,
            max_epochs=max_epochs,
            max_time_s=max_time_s,
            extra={"api_run_id": run.id},
            on_flow_run=_recorder(run),
        )

    return job
