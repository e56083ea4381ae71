"""The one facade of the workflow layer for the REST API (and any other front end): create a
campaign, run it or submit a run, retrain as a Prefect flow, schedule it.

Long work is always a Prefect flow run: the campaign flow (:mod:`workflows.flows`,
:mod:`workflows.deployed`) and the retrain flows (:func:`workflows.deployed.retrain_flow`, around
:func:`workflows.retrain.retrain`). Either it runs in
the calling thread against the process's shared temporary Prefect API (:func:`run_campaign`,
:func:`retrain`; the caller decides which thread), or it is submitted to a Prefect deployment
that a ``pesflow worker`` executes (:func:`submit_campaign_run`, :func:`submit_retrain`;
returns at once with the flow-run id). Prefect is imported by the functions that need it,
after :func:`workflows.settings.configure_prefect_env`; importing this module imports no
Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .config import ConfigError, StructurePolicy, public_snapshot
from .config_base import omit_null
from .context import CampaignHandle, open_context, open_store
from .deploy import (
    API_DEPLOYMENT,
    API_RETRAIN_DEPLOYMENT,
    FLOW_NAME,
    DeployError,
    DeploymentInfo,
    PrefectUnavailableError,
    deploy_campaign,
    undeploy_campaign,
)
from .parity import read_parity
from .profiles import ProfilesError, execution_profiles
from .retrain import NO_RETRAIN
from .settings import PesflowSettings, configure_prefect_env
from .setup import config_snapshot, reopen_campaign, setup_campaign
from .spec import CampaignSpec, format_body_errors, spec_to_config

__all__ = [
    "API_DEPLOYMENT",
    "API_RETRAIN_DEPLOYMENT",
    "FLOW_NAME",
    "NO_RETRAIN",
    "CampaignSpec",
    "ConfigError",
    "DeployError",
    "DeploymentInfo",
    "FlowRunInfo",
    "PrefectUnavailableError",
    "ProfilesError",
    "close",
    "create_campaign",
    "flow_run_info",
    "format_body_errors",
    "omit_null",
    "profile_names",
    "public_snapshot",
    "read_parity",
    "registered_names",
    "retrain",
    "run_campaign",
    "schedule_campaign",
    "submit_campaign_run",
    "submit_retrain",
    "unschedule_campaign",
]

log = logging.getLogger(__name__)

OnFlowRun = Callable[[str], None]
"""Called with the Prefect flow-run id as soon as the flow run starts."""


def _handle(settings: PesflowSettings, campaign_id: int) -> CampaignHandle:
    store = open_store(settings.resolved_database_url())
    return reopen_campaign(store, campaign_id, settings.data_dir)


def _hooks(on_flow_run: OnFlowRun | None) -> list[Any]:
    if on_flow_run is None:
        return []

    def on_running(flow: Any, flow_run: Any, state: Any) -> None:
        on_flow_run(str(flow_run.id))

    return [on_running]


# --------------------------------------------------------------------------- campaigns
def create_campaign(store: Any, spec: CampaignSpec, settings: PesflowSettings) -> int:
    """Create a campaign from a campaign author's config (structures as content, generated or
    from the operator's import directories; ``execution`` names an operator's profile) and
    return its id. It does not start.

    The campaign row (status ``created``, the config snapshot) is inserted before any set-up
    work, so the database's unique name decides between concurrent creates: the loser gets
    :class:`database.DuplicateError` and has done nothing. Raises :class:`ConfigError` for a
    bad config and :class:`ProfilesError` for a broken operator profiles file."""
    from sqlalchemy.exc import IntegrityError

    from database import DuplicateError

    policy = StructurePolicy.api(settings.data_dir, settings.resolved_database_url())
    try:
        cfg = spec_to_config(spec, policy)
    except ConfigError:  # ProfilesError included
        raise
    except Exception as exc:  # a config the validator's error formatting trips over
        log.exception("campaign config")
        raise ConfigError(f"invalid campaign config ({type(exc).__name__})") from exc
    try:
        store.create_campaign(cfg.name, config_snapshot(cfg))  # an existing name: Duplicate
    except IntegrityError as exc:  # PostgreSQL: the other insert committed in between
        raise DuplicateError(f"campaign {cfg.name!r} already exists") from exc
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return setup_campaign(store, cfg, settings.data_dir, policy).campaign_id


def run_campaign(
    settings: PesflowSettings,
    campaign_id: int,
    iterations: int | None = None,
    *,
    purpose: str = "api run",
    start_from: tuple[str, ...] = ("queued",),
    on_flow_run: OnFlowRun | None = None,
) -> dict[str, Any]:
    """Run the campaign flow in the calling thread until its stop rule, or for at most
    ``iterations`` more iterations, holding the campaign's lease (taken only from a status in
    ``start_from``: :class:`database.StatusConflictError` otherwise, e.g. paused or cancelled
    after the run was queued). Returns ``{"status", "message", ...}``; raises the flow's error
    when it failed."""
    from . import lease
    from .local_api import shared_api

    configure_prefect_env(settings)
    ctx = open_context(_handle(settings, campaign_id))
    from .deployed import continue_campaign
    from .flows import campaign_flow, make_task_runner  # imports Prefect

    hooks = _hooks(on_flow_run)
    # the process's own temporary Prefect API (no PREFECT_API_URL): started once, from a
    # thread that lives as long as the process, and stopped with it (workflows.local_api)
    with (
        lease.hold(ctx.store, campaign_id, purpose=purpose, start_from=start_from) as held,
        shared_api.use(settings.prefect_startup_timeout_s),
    ):
        if iterations is not None:
            return continue_campaign(ctx.handle, iterations, on_running=hooks)
        fl = campaign_flow.with_options(
            task_runner=make_task_runner(ctx.cfg.execution), on_running=hooks
        )
        state = fl(ctx.handle, return_state=True)
        if on_flow_run is not None:
            on_flow_run(str(state.state_details.flow_run_id))
        result = dict(state.result())  # raises the flow's error when it failed
        held.finish(result["status"], result["message"])
        return result


def submit_campaign_run(deployment: str, campaign_id: int, iterations: int | None = None) -> str:
    """Submit the campaign flow to Prefect deployment ``deployment`` ('flow/deployment', e.g.
    :data:`API_DEPLOYMENT`) and return the flow-run id at once. The deployment's flow
    (:func:`workflows.deployed.campaign_iterations`) reopens the campaign in the database of
    its own ``PESFLOW_*`` environment and continues it by ``iterations`` iterations (``None``:
    until its stop rule)."""
    from prefect.deployments import run_deployment

    params = {"campaign": campaign_id, "iterations": iterations}
    return str(run_deployment(deployment, parameters=params, timeout=0).id)


# --------------------------------------------------------------------------- retrain
def retrain(
    settings: PesflowSettings,
    campaign_id: int,
    *,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
    on_flow_run: OnFlowRun | None = None,
) -> dict[str, Any]:
    """Retrain the campaign's committee on every current done label as a Prefect flow run
    (:func:`workflows.deployed.retrain_flow`) in the calling thread; returns the flow's
    result (see :func:`workflows.retrain.retrain`); raises the flow's error when it failed.
    A campaign in a :data:`NO_RETRAIN` status (cancelled after the retrain was accepted) is
    not trained and no flow run starts: ``{"status", "message"}``."""
    from .local_api import shared_api

    configure_prefect_env(settings)
    store = open_store(settings.resolved_database_url())
    status = store.get_campaign(campaign_id).status
    if status in NO_RETRAIN:  # the flow checks again when it starts
        return {"status": status, "message": f"not started: the campaign is {status}"}
    handle = reopen_campaign(store, campaign_id, settings.data_dir)
    with shared_api.use(settings.prefect_startup_timeout_s):
        from .deployed import retrain_flow  # imports Prefect

        fl = retrain_flow.with_options(on_running=_hooks(on_flow_run))
        state = fl(handle, max_epochs, max_time_s, extra, return_state=True)
        return dict(state.result())


def submit_retrain(
    campaign_id: int,
    *,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
    deployment: str = API_RETRAIN_DEPLOYMENT,
) -> str:
    """Submit a retrain to Prefect deployment ``deployment`` (registered by ``pesflow
    worker`` next to :data:`API_DEPLOYMENT`); returns the flow-run id at once."""
    from prefect.deployments import run_deployment

    params = {
        "campaign": campaign_id,
        "max_epochs": max_epochs,
        "max_time_s": max_time_s,
        "extra": extra,
    }
    return str(run_deployment(deployment, parameters=params, timeout=0).id)


# --------------------------------------------------------------------------- flow runs
@dataclass(frozen=True)
class FlowRunInfo:
    """A Prefect flow run as a submitter sees it: its state type (``SCHEDULED``, ``PENDING``,
    ``RUNNING``, ``COMPLETED``, ``FAILED``, ``CRASHED``, ``CANCELLED``, ...; ``UNKNOWN``
    without a state), start and end (UTC) and the state's message."""

    state: str
    start_time: datetime | None
    end_time: datetime | None
    message: str | None


def flow_run_info(flow_run_id: str) -> FlowRunInfo:
    """Read a flow run from the configured Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
    return FlowRunInfo(
        state=fr.state.type.value if fr.state else "UNKNOWN",
        start_time=fr.start_time,
        end_time=fr.end_time,
        message=fr.state.message if fr.state is not None else None,
    )


def close() -> None:
    """Stop the process's temporary Prefect API now, or after its last flow run ends."""
    from .local_api import shared_api

    shared_api.close()


# --------------------------------------------------------------------------- schedules
def schedule_campaign(
    settings: PesflowSettings,
    campaign: str,
    *,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str = "UTC",
    iterations: int = 1,
    work_pool: str = "pesflow",
) -> DeploymentInfo:
    """Register (or replace) the campaign's scheduled deployment: each run continues it by
    ``iterations`` iterations; a cron expression or an interval (s). Raises
    :class:`PrefectUnavailableError` without a Prefect server, :class:`DeployError` for an
    invalid schedule."""
    configure_prefect_env(settings)
    return deploy_campaign(
        campaign,
        cron=cron,
        interval=interval,
        timezone=timezone,
        iterations=iterations,
        work_pool=work_pool,
    )


def unschedule_campaign(settings: PesflowSettings, campaign: str) -> bool:
    """Remove the campaign's scheduled deployment; ``False`` when it had none."""
    configure_prefect_env(settings)
    return undeploy_campaign(campaign)


def registered_names() -> dict[str, list[str]]:
    """Names of the registered extension implementations (built-in and entry points):
    ``{"model_backends": [...], "explorers": [...], "selectors": [...]}``. Imports
    :mod:`mlip_core` (and torch)."""
    from mlip_core.backends import BACKENDS
    from mlip_core.explorers import EXPLORERS
    from mlip_core.selectors import SELECTORS

    return {
        "model_backends": sorted(BACKENDS.names()),
        "explorers": sorted(EXPLORERS.names()),
        "selectors": sorted(SELECTORS.names()),
    }


def profile_names(settings: PesflowSettings | None = None) -> list[str]:
    """Names of the operator's execution profiles (:class:`ProfilesError` when the profiles
    file is broken)."""
    return sorted(execution_profiles(settings))
