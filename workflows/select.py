"""The select step: which of the iteration's offered frames get a DFT label.

The configured selector (:mod:`mlip_core.selectors`; it declares what it needs) picks among the
frames the explorers offered, after the filters (already selected, unfit geometry, the label
budget), each of which counts what it dropped. Selections, their pending labels and the step's
completion are recorded in one transaction; picks are seeded, so a rerun picks the same.
A share of the picks of each regime is held out for validation (:func:`holdouts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .context import CampaignHandle, open_context, seed_of
from .progress import reporter
from .seed import record_picks

__all__ = ["SelectResult", "holdouts", "is_holdout", "select_step"]


@dataclass(frozen=True)
class SelectResult:
    """The picked structure ids (in pick order), per reason how many offered frames each
    filter dropped (empty when the step had already run), and the picked frames held out for
    validation (labelled, never trained on: :func:`holdouts`)."""

    picked: list[int]
    dropped: dict[str, int] = field(default_factory=dict)
    held_out: list[int] = field(default_factory=list)


def select_step(handle: CampaignHandle, iteration_id: int) -> SelectResult:
    """Pick at most ``selection.max_per_iteration`` of the iteration's candidates (and no more
    than the label budget allows), drop geometrically unfit frames, record the selections and
    request their labels. Every filter reports how many frames it dropped."""
    from database import SelectionInput
    from mlip_core.selection import get_selector, select_candidates
    from structure_checks.geometry import geometry_problems

    ctx = open_context(handle)
    store, cfg = ctx.store, ctx.cfg
    it = store.get_iteration_by_id(iteration_id)
    if "select" in it.completed_steps:
        mine = [
            s
            for s in store.list_selections(ctx.campaign_id, iteration_id=it.id)
            if s.reason == "candidate" or is_holdout(s)
        ]
        return SelectResult(
            [s.structure_id for s in mine], held_out=[s.structure_id for s in mine if is_holdout(s)]
        )
    t0 = time.perf_counter()
    # in walker and frame order (not database id order, which depends on which walker
    # finished first), so the same campaign picks the same frames on every run
    cands: dict[int, float] = {}
    abs_dev: dict[int, float] = {}
    for c in store.list_candidates(it.id):
        cands.setdefault(c.structure_id, c.uncertainty)
        abs_dev.setdefault(c.structure_id, c.max_force_dev)
    already = {
        s.structure_id for s in store.list_selections(ctx.campaign_id) if s.iteration_id != it.id
    }
    sids = [s for s in cands if s not in already]
    dropped = {"already selected": len(cands) - len(sids)}
    frac = cfg.selection.max_candidate_fraction
    if frac is not None and sids:
        sids = _adaptive(ctx, it, cands, sids, frac, dropped)
    max_n = cfg.selection.max_per_iteration
    if cfg.convergence.label_budget is not None:
        used = sum(
            1 for lb in store.list_labels(ctx.campaign_id, limit=None) if lb.iteration_id != it.id
        )
        max_n = max(0, min(max_n, cfg.convergence.label_budget - used))
    picked: list[int] = []
    if sids and max_n > 0:
        atoms = store.get_atoms(sids)
        ok = []
        for i, a in enumerate(atoms):
            problems = geometry_problems(a)
            if problems:  # counted once, under its first problem
                why = f"unfit geometry: {problems[0].reason}"
                dropped[why] = dropped.get(why, 0) + 1
            else:
                ok.append(i)
        sids = [sids[i] for i in ok]
        atoms = [atoms[i] for i in ok]
    if sids and max_n > 0:
        devs = np.asarray([cands[s] for s in sids])
        selector = get_selector(cfg.selection.strategy)
        desc = None
        if "descriptors" in selector.needs or cfg.selection.min_distance > 0:
            from mlip_core.descriptors import descriptor_matrix

            desc = descriptor_matrix(atoms, ctx.species)
        idx = select_candidates(
            np.arange(len(sids)),
            devs,
            max_n,
            cfg.selection.strategy,
            seed=seed_of(cfg.seed, "select", it.index),
            descriptors=desc,
            min_distance=cfg.selection.min_distance,
            atoms=atoms,
        )
        picked = [sids[i] for i in idx]
    if max_n < cfg.selection.max_per_iteration:  # the label budget binds
        dropped["over the label budget or too similar"] = len(sids) - len(picked)
    else:
        dropped["over max_per_iteration or too similar"] = len(sids) - len(picked)
    shown = ", ".join(f"{n} {why}" for why, n in dropped.items() if n)
    if shown:
        reporter().message(
            f"iteration {it.index}: {len(picked)} of {len(cands)} offered frames picked ({shown})"
        )
    held = holdouts(ctx, it, picked)
    record_picks(
        ctx,
        it,
        [
            SelectionInput(
                s,
                max_force_dev=abs_dev[s],
                reason="validation" if s in held else "candidate",
                strategy=cfg.selection.strategy,
            )
            for s in picked
        ],
        "select",
        time.perf_counter() - t0,
        dropped,
    )
    return SelectResult(picked, dropped, [s for s in picked if s in held])


def _adaptive(ctx, it, cands: dict[int, float], sids: list[int], frac: float, dropped) -> list:
    """The offered frames at or above the adaptive lower level of the iteration's frames
    below hi (its accurate frames count below it); the rest are counted in ``dropped``. With
    ``trust.calibrated`` and a calibrated exploring committee, every frame is compared by its
    bound (deviation x its regime's scale, eV/Å), the unit its walker's window was in."""
    from mlip_core.selection import adaptive_lower_level

    lo, hi = ctx.cfg.trust.lo, ctx.cfg.trust.hi
    value = dict(cands)
    model = ctx.store.model_of_iteration(it.id)
    calibration = model.validation.get("calibration") if model is not None else None
    if ctx.cfg.trust.calibrated and calibration is not None:
        from mlip_core.calibration import RegimeCalibration

        from .regimes import structure_regimes

        cal = RegimeCalibration.from_dict(calibration)
        records = ctx.store.get_structures(list(cands))
        regimes = dict(zip([r.id for r in records], structure_regimes(ctx, records), strict=True))
        value = {s: float(cal.for_regime(regimes[s])(u)) for s, u in cands.items()}
    below = [0.0] * int(it.n_accurate) + [u for u in value.values() if u < hi]
    level = adaptive_lower_level(below, lo, hi, frac)
    keep = [s for s in sids if value[s] >= level]
    dropped[f"below the adaptive lower level {level:.3g}"] = len(sids) - len(keep)
    return keep


def is_holdout(selection) -> bool:
    """Whether a selection row is an explored frame held out for validation (reason
    ``validation`` with the selector's strategy; the seed step's validation copies have
    none)."""
    return selection.reason == "validation" and selection.strategy is not None


def holdouts(ctx, it, picked: list[int]) -> set[int]:
    """The picked frames held out for validation: per regime (the ``info["regime"]`` of the
    frame, :mod:`workflows.regimes`), as many as bring the campaign's held-out share of that
    regime's selected explored frames to ``validation.holdout_fraction`` (rounded half up;
    so over the iterations the share holds even when one iteration picks few frames), chosen
    by a seeded draw among the regime's picks. The choice is reported."""
    from .regimes import structure_regimes

    frac = ctx.cfg.validation.holdout_fraction
    if frac <= 0 or not picked:
        return set()
    store = ctx.store
    earlier = [
        s
        for s in store.list_selections(ctx.campaign_id)
        if s.iteration_id != it.id and (s.reason == "candidate" or is_holdout(s))
    ]
    ids = [s.structure_id for s in earlier] + list(picked)
    records = store.get_structures(ids)
    regime = dict(zip([r.id for r in records], structure_regimes(ctx, records), strict=True))
    n_before: dict[str, int] = {}
    h_before: dict[str, int] = {}
    for s in earlier:
        name = regime[s.structure_id]
        n_before[name] = n_before.get(name, 0) + 1
        h_before[name] = h_before.get(name, 0) + int(is_holdout(s))
    by_regime: dict[str, list[int]] = {}
    for sid in picked:
        by_regime.setdefault(regime[sid], []).append(sid)
    rng = np.random.default_rng(seed_of(ctx.cfg.seed, "holdout", it.index))
    held: dict[str, list[int]] = {}
    for name, sids in by_regime.items():
        target = int(np.floor(frac * (n_before.get(name, 0) + len(sids)) + 0.5))
        k = min(len(sids), max(0, target - h_before.get(name, 0)))
        if k:
            held[name] = [sids[i] for i in sorted(rng.choice(len(sids), k, replace=False))]
    if held:
        shown = ", ".join(f"{name} {len(v)}" for name, v in held.items())
        reporter().message(
            f"iteration {it.index}: {sum(map(len, held.values()))} of {len(picked)} picked frames "
            f"held out for validation ({shown})"
        )
    return {sid for v in held.values() for sid in v}
