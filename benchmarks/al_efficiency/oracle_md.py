"""The arm a user without pesflow would run: random frames of **oracle-driven** MD.

Same starts, walkers (temperature, steps, time step, recording stride, friction), bootstrap
and validation sets, label budget per iteration, model backend, repulsion baseline and training
settings as the campaign arms; only the exploration differs: the oracle itself drives the MD,
so **every MD step is an oracle call** (for a DFT oracle: one SCF per step). Each iteration
runs every walker once with the oracle, adds its recorded frames to a pool, draws
``selection.max_per_iteration`` of the not yet drawn frames uniformly at random (seeded) and
retrains (fine-tuning the previous committee when the campaign does). A frame's labels are the
oracle's energy, forces and (fully periodic cells) stress of the MD step that produced it: no
extra call. The bootstrap and validation sets are labelled as the seed step does (the
validation set is not used here, but the campaign arms pay for it, so this arm does too).

Oracle calls counted for a committee: the bootstrap and validation labels and every MD step
run before it was trained (plus one force call per walker start). The arm draws the campaign
arms' label budget, so most recorded frames are never trained on: it answers "what error do
N random AIMD frames give, and at what cost in oracle calls"; a user who trains on the whole
trajectory pays the same calls for more labels. Walkers with ramps, npt, nve or stored
starts are refused (only the plain nvt Langevin walker is reproduced with the oracle).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workflows.config import parse_config

from .testset import _label, evaluate, oracle_calculator, stable_seed

__all__ = ["ORACLE_MD", "run_oracle_md_arm"]

ORACLE_MD = "oracle-md"
"""The arm's name in ``BenchConfig.arms``."""


def _oracle_walk(start: Any, calc: Any, walker: Any, seed: int) -> tuple[list[Any], int]:
    """Frames of one oracle-driven Langevin walker (every ``record_every`` steps, the start
    excluded), labelled with the oracle's results of their step, and the oracle calls it made
    (the steps run, a multiple of ``record_every``, plus the start)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    work = start.copy()
    work.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(work, walker.temperature, rng=rng)
    Stationary(work)
    dyn = Langevin(
        work,
        walker.timestep * units.fs,
        temperature_K=walker.temperature,
        friction=walker.friction / units.fs,
        rng=rng,
        fixcm=False,
    )
    from mlip_core.training import attach_labels

    frames = []
    n = walker.steps // walker.record_every
    for _ in range(n):
        dyn.run(walker.record_every)
        # the step's own oracle results (computed at these positions: no new call)
        stress = work.get_stress() if work.pbc.all() else None
        f = work.copy()
        f.calc = None
        frames.append(attach_labels(f, work.get_potential_energy(), work.get_forces(), stress))
    return frames, n * walker.record_every + 1


def _train(cfg: Any, train: list[Any], warm: Any, seed: int) -> Any:
    """One committee as the product's train step builds it (backend, baseline, settings)."""
    from mlip_core.backends import TrainRequest, get_backend, train_with_repulsion

    tc, mc = cfg.training, cfg.model
    species = sorted({int(z) for a in train for z in a.numbers})
    tcfg = tc.settings(train, warm=warm is not None, seed=seed)
    request = TrainRequest(
        structures=train,
        species=species,
        n_members=mc.n_members,
        cutoff=mc.cutoff,
        options=mc.options,
        training=tcfg,
        warm=warm,
    )
    return train_with_repulsion(get_backend(mc.backend), request, mc.build_repulsion(species))


def run_oracle_md_arm(job: dict[str, Any]) -> dict[str, Any]:
    """The oracle-MD arm with one seed; ``job`` and the result as :func:`.arm.run_arm`
    (``curve`` points also give ``oracle_calls``; ``md_steps`` is the oracle MD run)."""
    import torch

    from workflows.context import seed_of, seeded_rng
    from workflows.steps import make_labeler
    from workflows.structures import bootstrap_structures

    from .config import BenchConfig, exploration_starts

    torch.set_num_threads(1)
    t_arm = time.perf_counter()
    bench = BenchConfig.model_validate(job["bench"])
    cfg = parse_config(job["campaign"], source="arm 'oracle-md'", check_files=False)
    seed, test = int(job["seed"]), job["test"]
    starts = exploration_starts(cfg)
    labeler = make_labeler(cfg)
    calc = oracle_calculator(cfg, labeler)
    boot = _label(
        labeler,
        bootstrap_structures(
            starts,
            cfg.bootstrap.n_structures,
            [cfg.bootstrap.rattle],
            cfg.bootstrap.strain,
            seeded_rng(cfg.seed, "bootstrap"),
        ),
    )
    val = bootstrap_structures(
        starts,
        cfg.validation.n_structures,
        cfg.validation.rattle,
        cfg.validation.strain,
        seeded_rng(cfg.seed, "validation"),
    )
    _label(labeler, val)  # paid for as by the campaign arms; not used
    calls = cfg.bootstrap.n_structures + len(val)  # failed labels were calls too
    walkers = [
        (i, c, w)
        for i, w in enumerate(cfg.exploration.walkers)
        if getattr(w, "kind", "md") == "md"
        for c in range(w.count)
    ]
    for i, _, w in walkers:
        if w.ensemble != "nvt" or w.temperature_end is not None or w.start_from != "initial":
            raise ValueError(
                f"oracle-md arm: exploration.walkers[{i}] is not a plain nvt walker (ramp, "
                "npt/nve or stored start): the arm would not reproduce it"
            )
    rng = np.random.default_rng(stable_seed(seed, "oracle-md", "picks"))
    train, pool, md_steps = list(boot), [], 0
    model, curve = None, []
    for it in range(bench.iterations + 1):
        model = _train(cfg, train, model, seed_of(cfg.seed, "train", it) % (2**31)).model
        ev = evaluate(model, test)
        curve.append(
            {
                "iteration": it,
                "n_labels": len(train),
                "oracle_calls": calls,
                "md_steps": md_steps,
                "force_rmse": ev["force_rmse"],
                "energy_rmse": ev["energy_rmse"],
                "per_regime": ev["per_regime"],
            }
        )
        if it == bench.iterations:
            break
        for i, c, w in walkers:
            start = starts[w.start if w.start is not None else i % len(starts)]
            frames, n = _oracle_walk(start, calc, w, stable_seed(seed, "oracle-md", it, i, c))
            pool += frames
            calls += n
            md_steps += n - 1
        k = min(cfg.selection.max_per_iteration, len(pool))
        picked = sorted(rng.choice(len(pool), size=k, replace=False).tolist(), reverse=True)
        train += [pool.pop(j) for j in picked]
    out: dict[str, Any] = {
        "arm": ORACLE_MD,
        "seed": seed,
        "curve": curve,
        "oracle_calls": calls,
        "oracle_calls_unused": 0,
        "md_steps": md_steps,
        "decision": f"{bench.iterations + 1} committees on random oracle-MD frames",
    }
    if bench.properties:
        from mlip_core.calculator import CommitteeCalculator

        from .properties import property_checks

        m = bench.material
        out["properties"] = property_checks(
            CommitteeCalculator(model, min_distance=0.0), m.element, m.crystal, m.lattice_constant
        )
    out["wall_s"] = time.perf_counter() - t_arm
    return out
