"""The seed step (iteration 0): bootstrap and validation structures, selected and requested.

The validation set is drawn per regime (:mod:`workflows.regimes`): every regime gets its share.

It records its selections, their pending labels and its own completion in one transaction, so a
run killed inside the step left nothing of it and a rerun finds it complete. The structures are
generated deterministically (seeded), so a rerun generates the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .context import CampaignHandle, Context, open_context, seeded_rng
from .structures import bootstrap_structures

__all__ = ["SeedResult", "record_picks", "seed_step", "validation_structures"]


def record_picks(
    ctx: Context, it, selections, step: str, seconds: float, dropped: dict[str, int] | None = None
) -> None:
    """Record a step's selections, their pending labels, what it dropped and its completion
    in one transaction (:meth:`database.Store.record_picks`)."""
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


@dataclass(frozen=True)
class SeedResult:
    """Structures the seed step selected (0 and 0 when it had already run)."""

    n_validation: int
    n_bootstrap: int


def seed_step(handle: CampaignHandle, iteration_id: int) -> SeedResult:
    """Iteration 0: bootstrap and validation structures, selected and requested (the
    structures are regenerated identically and deduplicated by hash); each is stored with its
    regime (``info["regime"]``): validation copies per regime (:func:`validation_structures`),
    bootstrap copies round-robin over all initial structures."""
    from database import SelectionInput

    ctx = open_context(handle)
    it = ctx.store.get_iteration_by_id(iteration_id)
    if "seed" in it.completed_steps:
        return SeedResult(0, 0)
    t0 = time.perf_counter()
    cfg, store, cid = ctx.cfg, ctx.store, ctx.campaign_id
    initial, regimes = ctx.initial, ctx.initial_regimes
    val, val_regimes = validation_structures(ctx)
    boot = bootstrap_structures(
        initial,
        cfg.bootstrap.n_structures,
        [cfg.bootstrap.rattle],
        cfg.bootstrap.strain,
        seeded_rng(cfg.seed, "bootstrap"),
    )
    boot_regimes = [regimes[j % len(initial)] for j in range(len(boot))]
    vids = store.add_structures(
        val, campaign=cid, iteration_id=it.id, source="validation", origins=_origins(val_regimes)
    )
    bids = store.add_structures(
        boot, campaign=cid, iteration_id=it.id, source="bootstrap", origins=_origins(boot_regimes)
    )
    selections = [SelectionInput(i, reason="validation") for i in vids]
    selections += [SelectionInput(i, reason="bootstrap") for i in bids]
    record_picks(ctx, it, selections, "seed", time.perf_counter() - t0)
    return SeedResult(len(vids), len(bids))


def validation_structures(ctx: Context) -> tuple[list, list[str]]:
    """The seeded validation structures and their regimes: per regime (in order of first
    appearance) its share of ``validation.n_structures``
    (:func:`workflows.regimes.validation_shares`) as rattled, strained copies cycling over that
    regime's initial structures (one generator over all regimes: with a single regime the set
    is the one drawn before regimes existed)."""
    from .regimes import validation_shares

    v = ctx.cfg.validation
    initial, regimes = ctx.initial, ctx.initial_regimes
    rng = seeded_rng(ctx.cfg.seed, "validation")
    out, names = [], []
    for name, n in validation_shares(v.n_structures, regimes).items():
        mine = [a for a, r in zip(initial, regimes, strict=True) if r == name]
        out += bootstrap_structures(mine, n, v.rattle, v.strain, rng)
        names += [name] * n
    return out, names


def _origins(regimes: list[str]) -> list:
    from database import Origin

    from .regimes import REGIME_KEY

    return [Origin(info={REGIME_KEY: r}) for r in regimes]
