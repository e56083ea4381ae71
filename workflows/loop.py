"""The campaign loop, once: seed, then per iteration train → explore → select → label → decide.

:func:`campaign_loop` is the whole sequence, each step called through an engine
(:mod:`workflows.engine`) bound in one place: the Prefect flow
(:func:`workflows.flows.campaign_flow`) binds :class:`~workflows.flows.PrefectEngine` (every step
a Prefect task); :func:`run_campaign` binds :class:`~workflows.engine.InProcess` (tests,
benchmarks). Resume, boundaries and the final decision: :class:`workflows.resume.CampaignRun`.
"""

from __future__ import annotations

from typing import Any

from .config_on_the_fly import is_on_the_fly
from .context import CampaignHandle, Context
from .decide import Decision, decide_step
from .engine import Engine, InProcess
from .explore import explore_step
from .label import label_step
from .on_the_fly import otf_explore_one, otf_select_step
from .resume import CampaignRun
from .seed import seed_step
from .select import select_step
from .train import train_step

__all__ = ["campaign_loop", "run_campaign"]


def campaign_loop(
    handle: CampaignHandle,
    engine: Engine,
    lease: Any = None,
    retry_failed: bool = False,
    max_iterations: int | None = None,
) -> Decision:
    """Run (or resume) the campaign until it stops (or, with ``max_iterations``, until that
    iteration index, exclusive: the campaign is then ``queued`` for its next run); returns the
    final :class:`Decision` (the caller ends the lease with its status)."""
    with CampaignRun(handle, lease, retry_failed, max_iterations) as run:
        # on-the-fly mode: an iteration is one MD segment per walker (decision 0010)
        otf = is_on_the_fly(run.ctx.cfg)
        explore_one, select = (otf_explore_one, otf_select_step) if otf else (None, select_step)
        if run.resume() is not None:
            leftover = run.leftover_iteration()
            if leftover is not None:
                label_step(handle, leftover, engine, run.stop_claiming)
        for it in run.iterations():
            if it.index == 0:
                engine.call(seed_step, handle, it.id)
                label_step(handle, it.id, engine, run.stop_claiming)
                run.boundary("after the bootstrap labels")
            engine.call(train_step, handle, it.id)
            run.boundary(f"after training iteration {it.index}")
            explore_step(handle, it.id, engine, explore_one)
            run.boundary(f"after exploring iteration {it.index}")
            engine.call(select, handle, it.id)
            label_step(handle, it.id, engine, run.stop_claiming)
            run.boundary(f"after labelling iteration {it.index}")
            if run.finished(engine.call(decide_step, handle, it.id)):
                break
    return run.final()


def run_campaign(
    ctx: Context | CampaignHandle,
    lease: Any = None,
    *,
    retry_failed: bool = False,
    engine: Engine | None = None,
    max_iterations: int | None = None,
) -> Decision:
    """:func:`campaign_loop` in this process (no Prefect): tests and benchmarks."""
    handle = ctx.handle if isinstance(ctx, Context) else ctx
    return campaign_loop(handle, engine or InProcess(), lease, retry_failed, max_iterations)
