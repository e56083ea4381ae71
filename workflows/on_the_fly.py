"""On-the-fly mode (``exploration.mode: on-the-fly``): each MD walker runs one long trajectory
that pauses where the committee doubts a step, gets that frame labelled and the model updated,
and continues (decision record 0010).

One iteration of the campaign loop is one *segment* per walker: train (a warm-start update of
``exploration.on_the_fly.update_epochs`` epochs on all labels) -> explore (each walker runs from
where its last segment ended until the next step that needs a label,
:func:`mlip_core.on_the_fly.run_segment`) -> select (the paused frames, no filters but the label
budget) -> label (the label step, exactly once) -> decide
(:func:`workflows.decide.otf_evaluate`). So every
piece is an ordinary step: a crash resumes at the step it stopped in, a frame already labelled
is never labelled again, and each update is a model row of its iteration.

Where a walker stands between segments is a file ``<data_dir>/on_the_fly/walker-<w>/
it-<index>.npz`` (positions, momenta, cell, step), written before the walker's row; a segment
rerun after a crash starts from the same file with the same seeded noise.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import timing
from .config_on_the_fly import STRATEGY
from .context import CampaignFailedError, CampaignHandle, Context, open_context, seed_of
from .decide import otf_labels
from .progress import reporter
from .seed import record_picks

__all__ = ["otf_explore_one", "otf_select_step", "state_path"]


def state_path(ctx: Context, walker: int, index: int) -> Path:
    """Where walker ``walker`` stands after iteration ``index``'s segment."""
    return ctx.data_dir / "on_the_fly" / f"walker-{walker}" / f"it-{index:04d}.npz"


def _last_state(ctx: Context, walker: int, index: int):
    """The state (and action) the walker's segment of iteration ``index`` starts from:
    ``(None, None)`` at iteration 0."""
    from mlip_core.on_the_fly import WalkerState

    if index == 0:
        return None, None
    path = state_path(ctx, walker, index - 1)
    if not path.exists():
        raise CampaignFailedError(
            f"on-the-fly walker {walker}: {path} is missing; the walker cannot continue"
        )
    return WalkerState.load(path)


def otf_explore_one(handle: CampaignHandle, iteration_id: int, walker: int, model_id: int) -> dict:
    """Run walker ``walker``'s segment of the iteration with model ``model_id`` and record it
    with the frame it paused at (offered, with the walker index and step in its origin)."""
    from database import Origin, WalkerOutcome
    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.on_the_fly import END, LABEL, REDO, STOP, run_segment

    from .calibrate import calibrated_trust
    from .explore import _summary, explorer_of, trust_of, walker_plans
    from .regimes import walker_regime
    from .train import load_model

    ctx = open_context(handle)
    store, cfg = ctx.store, ctx.cfg
    it = store.get_iteration_by_id(iteration_id)
    done = {r.walker: r for r in store.list_walker_runs(iteration_id)}
    if walker in done and done[walker].status == "done":
        return _summary(done[walker])
    plan = walker_plans(ctx, it)[walker]
    w = cfg.exploration.walkers[plan.config_index]
    explorer, params = explorer_of(w, plan.start, len(ctx.initial))
    seed = seed_of(cfg.seed, "on-the-fly", walker)
    base: dict[str, Any] = {
        "walker": walker,
        "model_id": model_id,
        "temperature": explorer.temperature(params),
        "pressure": getattr(params, "pressure", None),
        "ensemble": getattr(params, "ensemble", explorer.name),
        "seed": seed,
        "host": socket.gethostname(),
    }
    start, action = _last_state(ctx, walker, it.index)
    if action in (END, STOP):  # finished in an earlier segment: nothing left to run
        run = store.record_walker_run(iteration_id, WalkerOutcome(**base))
        state_path(ctx, walker, it.index).write_bytes(
            state_path(ctx, walker, it.index - 1).read_bytes()
        )
        return _summary(run)
    regime = walker_regime(w, plan.start, ctx.initial_regimes)
    model_rec = store.get_model(model_id)
    trust = trust_of(cfg)
    if cfg.trust.calibrated:
        trust, _ = calibrated_trust(trust, model_rec.validation.get("calibration"), regime)
    calc = CommitteeCalculator(
        load_model(ctx, model_rec), min_distance=trust.guard, relative_eps=cfg.trust.relative_eps
    )
    spec = explorer.spec(trust, params, seed)
    template = ctx.initial[plan.start]
    otf = cfg.exploration.on_the_fly
    with timing.compute("md"):
        seg = run_segment(template, start, calc, spec, max_redos=otf.max_redos)
    seg.state.save(state_path(ctx, walker, it.index), seg.action)
    offers = []
    if seg.action in (LABEL, REDO) and seg.frame is not None:
        f = seg.frame
        step = int(f.info["step"])
        origin = Origin(
            walker=f"otf-w{walker}",
            temperature=f.info.get("target_temperature_K", base["temperature"]),
            pressure=base["pressure"],
            md_step=step,
            info={
                "regime": regime,
                "explorer": explorer.name,
                "on_the_fly": True,
                "walker_index": walker,
                "walker_step": step,
                "iteration": it.index,
                "action": seg.action,
                "max_force_dev": float(f.info["max_force_dev"]),
                "uncertainty": float(f.info["uncertainty"]),
            },
        )
        dev = float(f.info["uncertainty"])
        offers.append((f, origin, dev, float(f.info["max_force_dev"]), seg.action == REDO))
    devs = np.asarray(seg.deviations, dtype=np.float64)
    run = store.record_walker_run(
        iteration_id,
        WalkerOutcome(
            n_frames=len(devs),
            n_accurate=seg.n_accurate,
            n_candidate=int(seg.action == LABEL),
            n_failed=int(seg.action in (REDO, STOP)),
            stopped_early=seg.action == STOP,
            stop_reason=seg.stop_reason,
            md_wall_s=seg.wall_time_s,
            max_force_devs=devs,
            offers=tuple(offers),
            **base,
        ),
    )
    where = f"step {seg.state.step}" if seg.frame is None else f"step {seg.frame.info['step']}"
    what = {LABEL: "label", REDO: "label and redo", END: "finished", STOP: "stopped"}[seg.action]
    reporter().message(f"iteration {it.index} on-the-fly walker {walker}: {what} at {where}")
    reporter().advance("explore")
    return _summary(run)


def otf_select_step(handle: CampaignHandle, iteration_id: int) -> list[int]:
    """Select the frames the iteration's walkers paused at (none already selected; within
    ``exploration.on_the_fly.max_labels`` and ``convergence.label_budget``), record them and
    request their labels in one transaction. Returns the picked structure ids."""
    from database import SelectionInput

    ctx = open_context(handle)
    store, cfg = ctx.store, ctx.cfg
    it = store.get_iteration_by_id(iteration_id)
    if "select" in it.completed_steps:
        return [
            s.structure_id
            for s in store.list_selections(ctx.campaign_id, iteration_id=it.id)
            if s.strategy == STRATEGY
        ]
    t0 = time.perf_counter()
    cands = {c.structure_id: c.max_force_dev for c in store.list_candidates(it.id)}
    already = {s.structure_id for s in store.list_selections(ctx.campaign_id)}
    sids = [s for s in cands if s not in already]
    dropped = {"already selected": len(cands) - len(sids)}
    room = len(sids)
    if cfg.exploration.on_the_fly.max_labels is not None:
        room = min(room, cfg.exploration.on_the_fly.max_labels - otf_labels(ctx))
    if cfg.convergence.label_budget is not None:
        room = min(
            room, cfg.convergence.label_budget - sum(store.count_labels(ctx.campaign_id).values())
        )
    picked = sids[: max(0, room)]
    dropped["over the label budget"] = len(sids) - len(picked)
    rows = [SelectionInput(s, max_force_dev=cands[s], strategy=STRATEGY) for s in picked]
    record_picks(ctx, it, rows, "select", time.perf_counter() - t0, dropped)
    return picked
