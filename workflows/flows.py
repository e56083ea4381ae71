"""Prefect tasks and the campaign flow: thin wrappers around :mod:`workflows.steps`.

This is the one place where the steps are bound to Prefect. Tasks take database ids, paths and
the small :class:`~workflows.steps.CampaignHandle`; the database, not Prefect's result cache,
decides what is already done (``cache_policy=NO_CACHE``: nothing is reused across runs).

The task runner comes from the campaign's ``execution`` section: a thread pool by default,
``prefect_dask.DaskTaskRunner`` when ``task_runner: dask``. Import this module only after
:func:`workflows.settings.configure_prefect_env`.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from . import lease, steps
from .cluster import label_slots, make_task_runner
from .config import ExecutionConfig
from .steps import CampaignHandle

__all__ = [
    "campaign_flow",
    "explore_task",
    "label_submitter",
    "label_task",
    "make_task_runner",
    "run_flow",
    "run_with_tasks",
    "train_task",
    "walker_mapper",
]


@task(name="train-committee", cache_policy=NO_CACHE)
def train_task(handle: CampaignHandle, iteration_id: int) -> dict[str, Any]:
    """Train (or verify) the iteration's committee; returns its model id and errors."""
    return steps.train_step(handle, iteration_id)


@task(name="explore-walker", cache_policy=NO_CACHE)
def explore_task(
    handle: CampaignHandle, iteration_id: int, walker: int, model_id: int
) -> dict[str, Any]:
    """One MD walker with the committee of ``model_id``; its results go to the database."""
    return steps.explore_one(handle, iteration_id, walker, model_id)


@task(name="label", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def label_task(handle: CampaignHandle, label_id: int, worker: str) -> str:
    """Label one claimed structure. Code failures are stored as data (no retry); an
    unexpected exception (e.g. the database unavailable) makes Prefect retry the task, which
    re-reads the finished DFT outcome from the label's directory instead of recomputing it."""
    return steps.label_one(handle, label_id, worker)


def walker_mapper(handle: CampaignHandle):
    """``walker_map`` for :func:`steps.run_campaign`: one :func:`explore_task` per walker,
    submitted together through the flow's task runner; returns their statistics in order."""

    def walker_map(indices: list[int], iteration_id: int, model_id: int) -> list:
        futures = [explore_task.submit(handle, iteration_id, i, model_id) for i in indices]
        return [f.result() for f in futures]

    return walker_map


def label_submitter(handle: CampaignHandle):
    """``submit`` for :func:`steps.label_step`: submits :func:`label_task` through the flow's
    task runner and returns a ``concurrent.futures.Future`` of the label's status."""

    def submit(label_id: int, worker: str) -> Future[str]:
        out: Future[str] = Future()

        def resolve(prefect_future: Any) -> None:
            try:
                out.set_result(prefect_future.result())
            except BaseException as exc:  # handed to label_step
                out.set_exception(exc)

        label_task.submit(handle, label_id, worker).add_done_callback(resolve)
        return out

    return submit


def run_with_tasks(ctx: steps.Context, retry_failed: bool = False) -> steps.Decision:
    """:func:`steps.run_campaign` with every step bound to the tasks above, run through the
    current flow's task runner (call from inside a flow, in the process that holds the
    campaign's lease: :func:`workflows.lease.hold`)."""
    held = lease.current(ctx.campaign_id)
    if held is None:
        raise RuntimeError(f"campaign {ctx.handle.name!r}: run it under its lease (lease.hold)")
    return steps.run_campaign(
        ctx,
        held,
        train=train_task,
        walker_map=walker_mapper(ctx.handle),
        label_submit=label_submitter(ctx.handle),
        label_slots=label_slots(ctx.cfg.execution),
        retry_failed=retry_failed,
    )


@flow(name="pesflow-campaign", log_prints=False, validate_parameters=False)
def campaign_flow(handle: CampaignHandle, retry_failed: bool = False) -> dict[str, Any]:
    """Run or resume a campaign until it converges, stops or fails; returns the decision."""
    decision = run_with_tasks(steps.open_context(handle), retry_failed)
    return {"stop": decision.stop, "status": decision.status, "message": decision.message}


def run_flow(
    handle: CampaignHandle, execution: ExecutionConfig, *, retry_failed: bool = False
) -> dict[str, Any]:
    """Run :func:`campaign_flow` with the configured task runner (raises the step's error)."""
    runner = make_task_runner(execution)
    return campaign_flow.with_options(task_runner=runner)(handle, retry_failed=retry_failed)
