"""Deployments, schedules, the worker and database migrations (the commands ``pesflow deploy |
worker | db`` are in :mod:`workflows.deploy_cli`).

Design (see docs/cluster.md): a Prefect **work pool** (type ``process``, default name
``pesflow``) decouples registering work from executing it.

- ``pesflow deploy CONFIG --cron "0 */6 * * *"`` (or ``--interval 3600``) creates the campaign
  in the database if needed and registers a deployment ``pesflow-campaign-iterations/<name>``
  of :data:`workflows.deployed.campaign_iterations` with parameters
  ``{"campaign": <name>, "iterations": 1}`` and the schedule. The API's
  ``POST /campaigns/{id}/schedule`` calls :func:`deploy_campaign` too.
- The Prefect server's scheduler service creates the runs (the temporary server of a plain
  ``pesflow run`` has no scheduler: deployments need ``PREFECT_API_URL``).
- ``pesflow worker`` is a Prefect process worker on that pool (``prefect worker start --type
  process``); each flow run is a child process of the worker, in the worker's process group.
  ``--limit 1`` (default) runs one flow run at a time, so runs of a schedule never overlap;
  a fire that comes while a run is busy waits (runs are never dropped, each adds one
  iteration). At start the worker marks the flow runs its pool left ``Running`` (a killed
  worker) as ``Crashed``; the campaign itself resumes from the database at the next run.

Prefect is imported lazily (after :func:`workflows.settings.configure_prefect_env`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from .config import ConfigError

__all__ = [
    "API_DEPLOYMENT",
    "API_RETRAIN_DEPLOYMENT",
    "DEFAULT_POOL",
    "DeployError",
    "DeploymentInfo",
    "PrefectUnavailableError",
    "crash_orphaned_runs",
    "db_upgrade",
    "deploy_api_runs",
    "deploy_campaign",
    "deployment_name",
    "ensure_work_pool",
    "wait_for_database",
    "worker_command",
]

DEFAULT_POOL = "pesflow"
FLOW_NAME = "pesflow-campaign-iterations"  # = workflows.deployed.FLOW_NAME (no Prefect import)
ENTRYPOINT = "workflows.deployed.campaign_iterations"


class DeployError(ConfigError):
    """A deployment that cannot be registered (no server, bad schedule); one line."""


class PrefectUnavailableError(DeployError):
    """No Prefect server is configured (``PREFECT_API_URL`` unset): the request was fine, the
    service is not set up (the API answers 503)."""


@dataclass(frozen=True)
class DeploymentInfo:
    """A registered deployment."""

    id: str
    name: str  # "<flow>/<deployment>", as run_deployment takes it
    work_pool: str
    schedule: str
    parameters: dict[str, Any]


def deployment_name(campaign: str) -> str:
    """``pesflow-campaign-iterations/<campaign>``."""
    return f"{FLOW_NAME}/{campaign}"


def require_server() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or ""
    if not url:
        raise PrefectUnavailableError(
            "schedules and workers need a Prefect server: set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api; `scripts/stack start` does)"
        )
    return url


ENGINE_COMMAND = "python -m prefect.engine"


def _pool_template() -> dict[str, Any]:
    """Prefect's process-pool job template with the engine command set explicitly: then each
    flow run stays in the worker's process group (Prefect puts runs without a configured
    command in a session of their own, which outlives a stopped worker)."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = ENGINE_COMMAND
    return template


def ensure_work_pool(name: str = DEFAULT_POOL) -> None:
    """Create the process-type work pool ``name`` (or set its engine command if it lacks it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    template = _pool_template()
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(
                    WorkPoolCreate(name=name, type="process", base_job_template=template)
                )
            return
        props = pool.base_job_template.get("variables", {}).get("properties", {})
        if pool.type == "process" and props.get("command", {}).get("default") != ENGINE_COMMAND:
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))


def _schedule_text(cron: str | None, interval: float | None, timezone: str) -> str:
    return f"cron {cron!r} ({timezone})" if cron else f"every {interval:g} s"


def deploy_campaign(
    campaign: str,
    *,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str = "UTC",
    iterations: int | None = 1,
    work_pool: str = DEFAULT_POOL,
    paused: bool = False,
) -> DeploymentInfo:
    """Register (or update) the scheduled deployment of an existing campaign.

    Exactly one of ``cron`` (five fields, one-minute granularity) and ``interval`` (seconds)
    is given; each run continues the campaign by ``iterations`` iterations."""
    if (cron is None) == (interval is None):
        raise DeployError("give exactly one of --cron or --interval")
    if interval is not None and interval < 1:
        raise DeployError(f"interval must be >= 1 s (got {interval:g})")
    if iterations is not None and iterations < 1:
        raise DeployError(f"iterations must be >= 1 (got {iterations})")
    require_server()
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    try:
        schedule = (
            CronSchedule(cron=cron, timezone=timezone)
            if cron is not None
            else IntervalSchedule(interval=float(interval))
        )  # type: ignore[arg-type]
    except Exception as exc:
        errors = exc.errors() if hasattr(exc, "errors") else None  # pydantic: its messages only
        msg = "; ".join(e["msg"] for e in errors) if errors else str(exc)
        what = f"cron {cron!r} ({timezone})" if cron is not None else f"interval {interval!r}"
        raise DeployError(f"invalid schedule {what}: {' '.join(msg.split())[:200]}") from None
    from prefect.types.entrypoint import EntrypointType

    from .deployed import campaign_iterations

    ensure_work_pool(work_pool)
    params = {"campaign": campaign, "iterations": iterations}
    dep = campaign_iterations.to_deployment(
        name=campaign,
        schedule=schedule,
        parameters=params,
        paused=paused,
        work_pool_name=work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["pesflow", f"campaign:{campaign}"],
        description=f"pesflow campaign {campaign}: {iterations or 'all'} iteration(s) per run",
    )
    dep_id = dep.apply()
    return DeploymentInfo(
        str(dep_id),
        deployment_name(campaign),
        work_pool,
        _schedule_text(cron, interval, timezone),
        params,
    )


API_DEPLOYMENT = f"{FLOW_NAME}/api"
RETRAIN_FLOW_NAME = "pesflow-retrain-campaign"  # = workflows.deployed.retrain_campaign.name
API_RETRAIN_DEPLOYMENT = f"{RETRAIN_FLOW_NAME}/api"


def deploy_api_runs(work_pool: str = DEFAULT_POOL) -> str:
    """Register the unscheduled deployments through which the API submits work:
    ``pesflow-campaign-iterations/api`` (``PESFLOW_API_DEPLOYMENT``; ``run_deployment(name,
    parameters={"campaign": id})`` runs the campaign until its stop rule) and
    ``pesflow-retrain-campaign/api`` (:data:`API_RETRAIN_DEPLOYMENT`: a retrain). Returns the
    campaign deployment's id."""
    require_server()
    from prefect.types.entrypoint import EntrypointType

    from .deployed import campaign_iterations, retrain_campaign

    ensure_work_pool(work_pool)
    dep = campaign_iterations.to_deployment(
        name=API_DEPLOYMENT.split("/", 1)[1],
        parameters={"iterations": None},
        work_pool_name=work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["pesflow", "api"],
        description="pesflow campaign runs submitted by the REST API (until the stop rule)",
    )
    retrain = retrain_campaign.to_deployment(
        name=API_RETRAIN_DEPLOYMENT.split("/", 1)[1],
        work_pool_name=work_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["pesflow", "api"],
        description="pesflow retrains submitted by the REST API",
    )
    retrain.apply()
    return str(dep.apply())


def undeploy_campaign(campaign: str) -> bool:
    """Delete the campaign's deployment (and its scheduled runs); ``False`` if there was none."""
    require_server()
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(deployment_name(campaign))
        except ObjectNotFound:
            return False
        client.delete_deployment(dep.id)
    return True


def crash_orphaned_runs(work_pool: str = DEFAULT_POOL) -> list[str]:
    """Mark flow runs of ``work_pool`` that are still ``Running``/``Pending`` as ``Crashed``.

    Call only when no worker of the pool is alive (``pesflow worker`` does at start, assuming
    one worker per pool): such runs died with the previous worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                )
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[work_pool])),
        )
        for run in runs:
            client.set_flow_run_state(
                run.id,
                Crashed(message="its worker stopped; the campaign resumes at the next run"),
                force=True,
            )
            crashed.append(str(run.id))
    return crashed


def worker_command(
    work_pool: str = DEFAULT_POOL,
    limit: int = 1,
    name: str | None = None,
    healthcheck: bool = False,
) -> list[str]:
    """The ``prefect worker start`` command line that ``pesflow worker`` executes
    (``healthcheck``: serve ``/health`` on ``PREFECT_WORKER_WEBSERVER_PORT``, default 8080)."""
    name = name or f"pesflow-{socket.gethostname()}-{os.getpid()}"
    cmd = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        work_pool,
        "--type",
        "process",
        "--limit",
        str(limit),
        "--name",
        name,
    ]
    return [*cmd, "--with-healthcheck"] if healthcheck else cmd


# --------------------------------------------------------------------------- database
def wait_for_database(url: str, timeout: float = 60.0, interval: float = 1.0) -> float:
    """Connect until the database answers ``SELECT 1`` (retrying every ``interval`` s);
    returns the seconds waited. Raises :class:`DeployError` after ``timeout``."""
    from sqlalchemy import create_engine, text

    t0 = time.monotonic()
    engine = create_engine(url)
    last: Exception | None = None
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return time.monotonic() - t0
            except Exception as exc:  # refused, starting up, DNS not yet there ...
                last = exc
            if time.monotonic() - t0 >= timeout:
                first = " ".join(str(last).split())[:200]
                raise DeployError(f"database not reachable after {timeout:g} s: {first}")
            time.sleep(interval)
    finally:
        engine.dispose()


def db_upgrade(url: str, timeout: float = 60.0) -> str | None:
    """Wait for the database, run the Alembic migrations to head; returns the revision."""
    from database.engine import current_revision, upgrade

    wait_for_database(url, timeout=timeout)
    upgrade(url)
    return current_revision(url)
