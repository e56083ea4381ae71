"""The explore step: the configured explorers (MD walkers, bands, registered ones; see
:mod:`mlip_core.explorers`) driven by the iteration's committee.

Each walker that finishes is one ``walker_runs`` row written together with the frames it
offers for labelling (:meth:`database.Store.record_walker_run`), so walkers finishing at the same
time never lose each other's results and a resumed iteration runs only the walkers that have no
row. A walker that raises is recorded as ``failed`` with its error (data, not a crash of the
campaign) and is run again by the next run of the step; if every walker of an iteration fails,
the step fails with their error instead of passing an iteration with nothing explored.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import timing
from .config import CampaignConfig
from .context import CampaignFailedError, CampaignHandle, Context, open_context, seed_of
from .engine import Engine, InProcess
from .progress import reporter

__all__ = [
    "ExploreResult",
    "WalkerPlan",
    "explore_one",
    "explore_step",
    "explorer_of",
    "trust_of",
    "walker_plans",
    "walker_spec",
]


@dataclass(frozen=True)
class WalkerPlan:
    """One concrete walker of an iteration: ``start`` indexes the initial structures, unless
    ``start_structure`` (a stored structure id, ``start_from: labelled | explored``) is set;
    ``start_note`` says why a walker configured to start elsewhere starts from ``start``."""

    index: int
    config_index: int
    start: int
    seed: int
    start_structure: int | None = None
    start_note: str | None = None


def walker_plans(ctx: Context, it) -> list[WalkerPlan]:
    """The iteration's walkers (``count`` copies of each configured entry, seeds differ; an MD
    walker without ``start`` takes the initial structures round-robin, one with ``start: s``
    the structures of source ``structures[s]`` (copy c its frame c modulo their number); one with
    ``start_from: labelled | explored`` a stored frame, :mod:`workflows.walker_starts`)."""
    from .walker_starts import choose_start, start_pool

    plans = []
    n_init = len(ctx.runtime["initial_structure_ids"])
    pools: dict[str, list[tuple[int, float]]] = {}
    sources = ctx.initial_sources
    for ci, w in enumerate(ctx.cfg.exploration.walkers):
        origin = getattr(w, "start_from", "initial")
        if origin != "initial" and origin not in pools:
            pools[origin] = start_pool(ctx, it, origin)
        source = getattr(w, "start", None)  # a structure source: its frames, cycled by copy
        frames = [f for f, s in enumerate(sources) if s == source] if source is not None else []
        for c in range(w.count):
            i = len(plans)
            start = frames[c % len(frames)] if frames else i % n_init
            seed = seed_of(ctx.cfg.seed, "walk", it.index, ci, c)
            if origin == "initial":
                plans.append(WalkerPlan(i, ci, start, seed))
                continue
            got = choose_start(ctx, it, pools[origin], w.start_rule, ci, c, origin)
            plans.append(WalkerPlan(i, ci, start, seed, got.structure_id, got.note))
    return plans


def trust_of(cfg: CampaignConfig):
    """The campaign's trust window and distance guard as a :class:`mlip_core.monitor.Trust`."""
    from mlip_core.monitor import Trust

    t = cfg.trust
    return Trust(
        lo=t.lo,
        hi=t.hi,
        relative=t.relative,
        relative_eps=t.relative_eps,
        energy_lo=t.energy_lo,
        energy_hi=t.energy_hi,
        min_distance=cfg.exploration.min_distance,
        min_distance_fraction=cfg.exploration.min_distance_fraction,
    )


def explorer_of(walker: Any, start: int, n_initial: int = 0) -> tuple[Any, Any]:
    """The registered explorer of a ``cfg.exploration.walkers`` entry and its parameters
    (stored structures it uses are indexed after the ``n_initial`` initial structures)."""
    from mlip_core.explorers import get_explorer, make_params

    explorer = get_explorer(walker.kind)
    return explorer, make_params(explorer, walker.explorer_params(start, n_initial))


def structure_pool(ctx: Context, walker: Any) -> list[Any]:
    """The initial structures followed by the stored structures ``walker`` names, each of which
    must belong to this campaign and carry a done label (``ValueError`` otherwise)."""
    ids = walker.stored_ids()
    if not ids:
        return list(ctx.initial)
    done = {
        lb.structure_id
        for lb in ctx.store.list_labels(ctx.campaign_id, limit=None)
        if lb.status == "done"
    }
    missing = [i for i in ids if i not in done]
    if missing:
        raise ValueError(
            f"structure(s) {missing} are not labelled structures of campaign {ctx.handle.name!r}"
        )
    return list(ctx.initial) + list(ctx.store.get_atoms(ids))


def walker_spec(cfg: CampaignConfig, walker: Any, seed: int):
    """The :class:`mlip_core.md.WalkerSpec` of an MD walker entry under the campaign's trust
    window, with ``seed``."""
    explorer, params = explorer_of(walker, walker.start or 0)
    return explorer.spec(trust_of(cfg), params, seed)


def _summary(run) -> dict[str, Any]:
    keys = ("walker", "status", "n_frames", "n_accurate", "n_candidate", "n_failed")
    out = {k: getattr(run, k) for k in keys}
    out.update(stopped_early=run.stopped_early, stop_reason=run.stop_reason, error=run.error)
    return out


def explore_one(handle: CampaignHandle, iteration_id: int, walker: int, model_id: int) -> dict:
    """Run one walker with the committee of model ``model_id`` (its checkpoint's sha256 is
    checked before use) and record it with its offered frames. Returns its statistics. A
    checkpoint that fails the check raises (never an exploration with an unknown model); an
    error of the MD itself is recorded as a failed walker."""
    from database import Origin, WalkerOutcome
    from mlip_core.calculator import CommitteeCalculator

    from .calibrate import bound_summary, calibrated_trust
    from .regimes import structure_regimes, walker_regime
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
    temperature = explorer.temperature(params)
    pressure = getattr(params, "pressure", None)
    base: dict[str, Any] = {
        "walker": walker,
        "model_id": model_id,
        "temperature": temperature,
        "pressure": pressure,
        "ensemble": getattr(params, "ensemble", explorer.name),
        "seed": plan.seed,
        "host": socket.gethostname(),
    }
    what = f"{temperature:g} K" if temperature is not None else explorer.name
    if plan.start_note:
        reporter().message(f"iteration {it.index} walker {walker}: {plan.start_note}")
    if plan.start_structure is not None and not getattr(w, "regime", None):
        # a walker started from a stored frame explores that frame's regime
        regime = structure_regimes(ctx, store.get_structures([plan.start_structure]))[0]
    else:
        regime = walker_regime(w, plan.start, ctx.initial_regimes)
    model_rec = store.get_model(model_id)
    model = load_model(ctx, model_rec)
    trust = trust_of(cfg)
    if cfg.trust.calibrated:
        calibration = model_rec.validation.get("calibration")
        trust, _ = calibrated_trust(trust, calibration, regime)
        if walker == 0:  # one line per iteration, not one per walker
            summary = bound_summary(calibration, cfg.trust.lo, cfg.trust.hi)
            reporter().message(f"iteration {it.index}: {summary}")
    try:
        # one distance rule for the calculator and the monitor (0: no check in both)
        calc = CommitteeCalculator(
            model, min_distance=trust.guard, relative_eps=cfg.trust.relative_eps
        )
        if plan.start_structure is not None:
            starts = store.get_atoms([plan.start_structure])
        else:
            pool = structure_pool(ctx, w)
            starts = [pool[i] for i in explorer.starts(params, len(pool))]
        with timing.compute("md"):
            res = explorer.explore(starts, calc, trust, params, plan.seed)
    except Exception as exc:  # a walker that cannot run is data, not a crash of the campaign
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        run = store.record_walker_run(
            iteration_id, WalkerOutcome(status="failed", error=error, **base)
        )
        reporter().message(f"walker {walker} ({what}) failed: {error}")
        reporter().advance("explore")
        return _summary(run)
    counts = {"accurate": 0, "candidate": 0, "failed": 0}
    devs, offers = [], []
    for frame in res.frames:
        status = frame.info.get("status")
        dev = frame.info.get("uncertainty")
        counts[status] = counts.get(status, 0) + 1
        finite = dev is not None and np.isfinite(dev)
        devs.append(float(frame.info["max_force_dev"]) if finite else np.nan)
        cut = status == "failed"
        offer = status == "candidate" or (cut and cfg.selection.label_cut_frames)
        if offer and finite:
            origin = Origin(
                walker=f"it{it.index}-w{walker}",
                # the thermostat's target when the frame was taken (ramps move it)
                temperature=frame.info.get("target_temperature_K", temperature),
                pressure=frame.info.get("target_pressure_GPa", pressure),
                md_step=int(frame.info["step"]),
                info={
                    "regime": regime,
                    "explorer": explorer.name,
                    "max_force_dev": float(frame.info["max_force_dev"]),
                    "uncertainty": float(dev),
                    **{
                        k: float(frame.info[k])
                        for k in ("max_devi_e", "max_devi_v")
                        if np.isfinite(frame.info.get(k, np.nan))
                    },
                    **{k: frame.info[k] for k in explorer.origin_keys if k in frame.info},
                    **(
                        {"start_structure_id": plan.start_structure} if plan.start_structure else {}
                    ),
                },
            )
            offers.append((frame, origin, float(dev), float(frame.info["max_force_dev"]), cut))
    run = store.record_walker_run(
        iteration_id,
        WalkerOutcome(
            n_frames=len(res.frames),
            n_accurate=counts["accurate"],
            n_candidate=counts["candidate"],
            n_failed=counts["failed"],
            stopped_early=bool(res.stopped_early),
            stop_reason=res.stop_reason,
            md_wall_s=res.wall_time_s,
            max_force_devs=np.asarray(devs, dtype=np.float64),
            offers=tuple(offers),
            **base,
        ),
    )
    if res.stopped_early:
        reporter().message(f"iteration {it.index} walker {walker} ({what}) cut: {res.stop_reason}")
    reporter().advance("explore")
    return _summary(run)


@dataclass(frozen=True)
class ExploreResult:
    """Frames the iteration's explorers produced, by trust class, and how many explorations
    were cut (the model lost) or failed (could not run)."""

    n_explored: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    n_cut: int
    n_walkers_failed: int


def explore_step(
    handle: CampaignHandle, iteration_id: int, engine: Engine | None = None, one: Any = None
) -> ExploreResult:
    """Run the iteration's walkers that have not finished (failed ones again) with the
    iteration's committee, through ``engine.map(one, ...)`` (default :func:`explore_one`; the
    on-the-fly mode's :func:`workflows.on_the_fly.otf_explore_one`), in this process by default,
    then record the aggregated counts and the completed step in one transaction.

    Raises:
        CampaignFailedError: the iteration has no model yet, a walker did not report, or every
            walker failed (their first error is named).
    """
    ctx = open_context(handle)
    store = ctx.store
    it = store.get_iteration_by_id(iteration_id)
    if "explore" in it.completed_steps:
        return _counts(store.list_walker_runs(it.id))
    model = store.model_of_iteration(iteration_id)
    if model is None:
        raise CampaignFailedError(f"iteration {it.index}: no committee to explore with")
    plans = walker_plans(ctx, it)
    t0 = time.perf_counter()
    finished = {r.walker for r in store.list_walker_runs(it.id) if r.status == "done"}
    todo = [p.index for p in plans if p.index not in finished]
    store.discard_failed_walker_runs(it.id)
    reporter().start("explore", len(plans), f"iteration {it.index}: exploring")
    reporter().advance("explore", len(plans) - len(todo))
    if todo:
        (engine or InProcess()).map(
            one or explore_one, [(handle, it.id, i, model.id) for i in todo]
        )
    reporter().finish("explore")
    runs = store.list_walker_runs(it.id)
    missing = sorted({p.index for p in plans} - {r.walker for r in runs})
    if missing:
        raise CampaignFailedError(f"iteration {it.index}: walkers {missing} did not report")
    failed = [r for r in runs if r.status == "failed"]
    if len(failed) == len(runs):
        raise CampaignFailedError(
            f"iteration {it.index}: all {len(runs)} walkers failed, nothing was explored; "
            f"first error: {failed[0].error}"
        )
    counts = _counts(runs)
    store.update_iteration(
        it.id,
        n_explored=counts.n_explored,
        n_accurate=counts.n_accurate,
        n_candidate=counts.n_candidate,
        n_failed=counts.n_failed,
        complete_step="explore",
        step_seconds=time.perf_counter() - t0,
    )
    return counts


def _counts(runs) -> ExploreResult:
    acc = sum(r.n_accurate for r in runs)
    cand = sum(r.n_candidate for r in runs)
    fail = sum(r.n_failed for r in runs)
    return ExploreResult(
        n_explored=acc + cand + fail,
        n_accurate=acc,
        n_candidate=cand,
        n_failed=fail,
        n_cut=sum(bool(r.stopped_early) for r in runs),
        n_walkers_failed=sum(r.status == "failed" for r in runs),
    )
