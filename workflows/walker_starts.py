"""Where an MD walker starts when it does not start from an initial structure.

``exploration.walkers[i].start_from`` (:class:`workflows.config_exploration.WalkerConfig`):

- ``labelled``: a structure with a ``done`` label that the campaign selected before this
  iteration's exploration (picks of earlier iterations, and the bootstrap picks of this one);
  validation structures are never used (they stay held out);
- ``explored``: a frame the previous iteration's walkers offered for labelling (frames at which
  a walker was cut, where the model was lost, are not used).

``start_rule`` picks one frame of that pool per walker copy: ``random`` (seeded by the campaign
seed, the iteration, the entry and the copy) or ``uncertain`` (copy ``c`` takes the frame with
the ``c``-th highest committee deviation; ties by structure id). The pool comes from rows that
no longer change once the iteration has started, so a resumed iteration picks the same starts.
(One exception: a failed label of an earlier iteration retried while this iteration is
unfinished joins the ``labelled`` pool.) With an empty pool (iteration 0 of ``explored``) the
walker starts from an initial structure and its plan says so (:attr:`StartChoice.note`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .context import Context, seed_of

__all__ = ["StartChoice", "choose_start", "start_pool"]


@dataclass(frozen=True)
class StartChoice:
    """A walker's start: a stored structure (``structure_id``) or, with ``None``, the initial
    structure the plan names; ``note`` says why when the configured pool was empty."""

    structure_id: int | None
    note: str | None = None


def start_pool(ctx: Context, it: Any, start_from: str) -> list[tuple[int, float]]:
    """``(structure_id, uncertainty)`` of the frames ``start_from`` may start from at iteration
    ``it``, by structure id (uncertainty: the committee deviation when the frame was explored,
    eV/Å or relative; ``-inf`` when unknown, e.g. bootstrap structures)."""
    store = ctx.store
    iterations = store.list_iterations(ctx.campaign_id)
    if start_from == "explored":
        prev = [x for x in iterations if x.index == it.index - 1]
        if not prev:
            return []
        best: dict[int, float] = {}
        for c in store.list_candidates(prev[0].id):
            if not c.cut and np.isfinite(c.uncertainty):
                best[c.structure_id] = max(best.get(c.structure_id, -np.inf), c.uncertainty)
        return sorted(best.items())
    if start_from != "labelled":
        raise ValueError(f"unknown start_from {start_from!r}")
    index = {x.id: x.index for x in iterations}
    done = {lb.structure_id for lb in store.list_labels(ctx.campaign_id, status="done", limit=None)}
    held_out = set()
    pool: dict[int, float] = {}
    for sel in store.list_selections(ctx.campaign_id):
        when = index.get(sel.iteration_id, -1) if sel.iteration_id is not None else -1
        if sel.reason == "validation":
            held_out.add(sel.structure_id)
            continue
        earlier = when < it.index or (when == it.index and sel.reason == "bootstrap")
        if not earlier or sel.structure_id not in done:
            continue
        dev = sel.max_force_dev
        dev = float(dev) if dev is not None and np.isfinite(dev) else -np.inf
        pool[sel.structure_id] = max(pool.get(sel.structure_id, -np.inf), dev)
    return sorted((s, d) for s, d in pool.items() if s not in held_out)


def choose_start(
    ctx: Context,
    it: Any,
    pool: list[tuple[int, float]],
    rule: str,
    entry: int,
    copy: int,
    start_from: str,
) -> StartChoice:
    """The start of copy ``copy`` of walker entry ``entry`` (see the module docstring)."""
    if not pool:
        return StartChoice(
            None,
            f"no {start_from} frames before iteration {it.index}: started from an initial "
            "structure",
        )
    if rule == "uncertain":
        ranked = sorted(pool, key=lambda p: (-p[1], p[0]))
        return StartChoice(ranked[copy % len(ranked)][0])
    rng = np.random.default_rng(seed_of(ctx.cfg.seed, "start", it.index, entry, copy))
    return StartChoice(pool[int(rng.integers(len(pool)))][0])
