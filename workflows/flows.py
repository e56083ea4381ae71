"""The campaign flow: :func:`workflows.loop.campaign_loop` with every step a Prefect task.

This is the one place where the steps are bound to Prefect (:class:`PrefectEngine`). Tasks take
database ids and the small :class:`~workflows.context.CampaignHandle`; the database, not
Prefect's result cache, decides what is already done (``cache_policy=NO_CACHE``: nothing is
reused across runs). The task runner comes from the campaign's ``execution`` section: a thread
pool by default, ``prefect_dask.DaskTaskRunner`` when ``task_runner: dask``. Import this module
only after :func:`workflows.settings.configure_prefect_env`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from . import lease
from .cluster import label_slots, make_task_runner
from .config import ExecutionConfig
from .context import CampaignHandle, open_context
from .decide import decide_step
from .explore import explore_one
from .label import label_one
from .loop import campaign_loop
from .on_the_fly import otf_explore_one, otf_select_step
from .seed import seed_step
from .select import select_step
from .train import train_step

__all__ = ["PrefectEngine", "campaign_flow", "make_task_runner", "run_flow"]

R = TypeVar("R")

# name, retries: a label task is retried on an unexpected exception (e.g. the database away);
# the retry re-reads the finished DFT outcome from the label's directory instead of recomputing
_TASKS: dict[Callable[..., Any], Any] = {
    step: task(name=name, cache_policy=NO_CACHE, retries=retries, retry_delay_seconds=1)(step)
    for step, name, retries in (
        (seed_step, "seed", 0),
        (train_step, "train-committee", 0),
        (explore_one, "explore-walker", 0),
        (select_step, "select", 0),
        (otf_explore_one, "explore-on-the-fly", 0),
        (otf_select_step, "select-on-the-fly", 0),
        (label_one, "label", 2),
        (decide_step, "decide", 0),
    )
}


class PrefectEngine:
    """Every step a Prefect task of the current flow run, through its task runner."""

    def __init__(self, label_slots: int = 8) -> None:
        self.label_slots = label_slots

    def call(self, step: Callable[..., R], *args: Any) -> R:
        return _TASKS[step](*args)

    def map(self, step: Callable[..., R], calls: Sequence[tuple[Any, ...]]) -> list[R]:
        futures = [_TASKS[step].submit(*args) for args in calls]
        return [f.result() for f in futures]

    def submit(self, step: Callable[..., R], *args: Any) -> Future[R]:
        out: Future[R] = Future()

        def resolve(prefect_future: Any) -> None:
            try:
                out.set_result(prefect_future.result())
            except BaseException as exc:  # handed to the caller through the future
                out.set_exception(exc)

        _TASKS[step].submit(*args).add_done_callback(resolve)
        return out


@flow(name="pesflow-campaign", log_prints=False, validate_parameters=False)
def campaign_flow(
    handle: CampaignHandle, retry_failed: bool = False, max_iterations: int | None = None
) -> dict[str, Any]:
    """Run or resume a campaign until it converges, stops or fails (or until iteration index
    ``max_iterations``, exclusive, when given); returns the decision as a dict. Call it in the
    process that holds the campaign's lease (:func:`workflows.lease.hold`)."""
    held = lease.current(handle.campaign_id)
    if held is None:
        raise RuntimeError(f"campaign {handle.name!r}: run it under its lease (lease.hold)")
    engine = PrefectEngine(label_slots(open_context(handle).cfg.execution))
    return campaign_loop(handle, engine, held, retry_failed, max_iterations).as_dict()


def run_flow(
    handle: CampaignHandle, execution: ExecutionConfig, *, retry_failed: bool = False
) -> dict[str, Any]:
    """Run :func:`campaign_flow` with the configured task runner (raises the step's error)."""
    runner = make_task_runner(execution)
    return campaign_flow.with_options(task_runner=runner)(handle, retry_failed=retry_failed)
