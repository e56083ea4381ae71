"""The select step: which of the iteration's offered frames get a DFT label.

The configured selector (:mod:`mlip_core.selectors`; it declares what it needs) picks among the
frames the explorers offered, after the filters (already selected, unfit geometry, the label
budget), each of which counts what it dropped. Selections, their pending labels and the step's
completion are recorded in one transaction; picks are seeded, so a rerun picks the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .context import CampaignHandle, open_context, seed_of
from .progress import reporter
from .seed import record_picks

__all__ = ["SelectResult", "select_step"]


@dataclass(frozen=True)
class SelectResult:
    """The picked structure ids (in pick order) and, per reason, how many offered frames each
    filter dropped (empty when the step had already run)."""

    picked: list[int]
    dropped: dict[str, int] = field(default_factory=dict)


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
        return SelectResult(
            [
                s.structure_id
                for s in store.list_selections(ctx.campaign_id, iteration_id=it.id)
                if s.reason == "candidate"
            ]
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
    record_picks(
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
    return SelectResult(picked, dropped)
