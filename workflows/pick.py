"""Choosing what to label: the seed step (iteration 0: bootstrap and validation structures) and
the select step (the committee's candidates). Each records its selections, their pending labels
and its own completion in one transaction, so a run killed inside the step left nothing of it
and a rerun finds it complete. Picks are deterministic (seeded), so a rerun picks the same.
"""

from __future__ import annotations

import time

import numpy as np

from .context import Context, seed_of, seeded_rng
from .progress import reporter
from .structures import bootstrap_structures

__all__ = ["seed_step", "select_step"]


def _record(
    ctx: Context, it, selections, step: str, seconds: float, dropped: dict[str, int] | None = None
) -> None:
    ctx.store.record_picks(
        ctx.campaign_id,
        it.id,
        selections,
        step=step,
        labeler=ctx.labeler_name,
        settings_hash=ctx.settings_hash,
        settings=dict(ctx.cfg.labeler.settings),
        seconds=seconds,
        dropped=dropped,
    )


def seed_step(ctx: Context, it) -> None:
    """Iteration 0: bootstrap and validation structures, selected and requested (the
    structures are regenerated identically and deduplicated by hash)."""
    from database import SelectionInput

    if "seed" in it.completed_steps:
        return
    t0 = time.perf_counter()
    cfg, store, cid = ctx.cfg, ctx.store, ctx.campaign_id
    initial = ctx.initial
    val = bootstrap_structures(
        initial,
        cfg.validation.n_structures,
        cfg.validation.rattle,
        cfg.validation.strain,
        seeded_rng(cfg.seed, "validation"),
    )
    boot = bootstrap_structures(
        initial,
        cfg.bootstrap.n_structures,
        [cfg.bootstrap.rattle],
        cfg.bootstrap.strain,
        seeded_rng(cfg.seed, "bootstrap"),
    )
    vids = store.add_structures(val, campaign=cid, iteration_id=it.id, source="validation")
    bids = store.add_structures(boot, campaign=cid, iteration_id=it.id, source="bootstrap")
    selections = [SelectionInput(i, reason="validation") for i in vids]
    selections += [SelectionInput(i, reason="bootstrap") for i in bids]
    _record(ctx, it, selections, "seed", time.perf_counter() - t0)


def select_step(ctx: Context, it) -> list[int]:
    """Pick at most ``selection.max_per_iteration`` of the iteration's candidates (and no more
    than the label budget allows), drop geometrically unfit frames, record the selections and
    request their labels. Every filter reports how many frames it dropped."""
    from database import SelectionInput
    from mlip_core.geometry import check_geometry
    from mlip_core.selection import get_selector, select_candidates

    store, cfg = ctx.store, ctx.cfg
    it = store.get_iteration_by_id(it.id)
    if "select" in it.completed_steps:
        return [
            s.structure_id
            for s in store.list_selections(ctx.campaign_id, iteration_id=it.id)
            if s.reason == "candidate"
        ]
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
            problems = check_geometry(a)
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
    _record(
        ctx,
        it,
        [
            SelectionInput(
                s, max_force_dev=abs_dev[s], reason="candidate", strategy=cfg.selection.strategy
            )
            for s in picked
        ],
        "select",
        time.perf_counter() - t0,
        dropped,
    )
    return picked
