"""Benchmark: MD step time of one model vs a K-member committee (stacked and as a loop).

Run ``python -m benchmarks.mlip_core`` (``make bench`` does). Every configuration runs the same
ASE Langevin MD on the same Cu cell; rounds are interleaved (A B C A B C ...) so each sees the
same machine load, and medians of per-step times are printed with ratios to the single model.
Add ``--device cuda`` on a GPU machine. MACE is included when ``mace-torch`` is installed.
``--lammps`` instead times NVE with LAMMPS integrating (``fix external``, :mod:`mlip_core.lammps`)
against ASE's VelocityVerlet, same committee calculator, side by side (needs ``pesflow[lammps]``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteePotential, LoopCommittee, ModelConfig
from mlip_core.neighbors import build_graph

__all__ = ["bench_lammps_md", "bench_md", "main"]


def _cu(n_rep: int) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n_rep)
    atoms.rattle(0.02, seed=1)
    return atoms


def _model(
    k: int, atoms: Atoms, device: str, dtype: torch.dtype, **cfg: object
) -> CommitteePotential:
    model = CommitteePotential(
        ModelConfig(species=[29], n_members=k, seeds=list(range(k)), energy_scale=0.5, **cfg)  # type: ignore[arg-type]
    ).to(dtype)
    model.fit_feature_statistics(
        [build_graph(atoms, model.cutoff, model.species_index, dtype=dtype)]
    )
    return model.to(device)


def _mace_calculators(k: int, device: str) -> dict[str, Calculator]:
    """One MACE model and a K-member MACE committee (pesflow's MACE backend), if installed."""
    try:
        from mlip_core.mace_backend import mace_committee_calculator
    except ImportError:
        return {}
    return {
        "MACE single": mace_committee_calculator(1, species=[29], device=device),
        f"MACE K={k} loop": mace_committee_calculator(k, species=[29], device=device),
    }


def _time_md(atoms: Atoms, calc: Calculator, steps: int) -> list[float]:
    a = atoms.copy()
    a.calc = calc
    MaxwellBoltzmannDistribution(a, temperature_K=300, rng=np.random.default_rng(0))
    dyn = Langevin(
        a, 1.0 * units.fs, temperature_K=300, friction=0.01, rng=np.random.default_rng(0)
    )
    dyn.run(3)  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        dyn.run(1)
        times.append(time.perf_counter() - t0)
    return times


def bench_md(
    sizes: tuple[int, ...] = (3, 10),
    k: int = 4,
    steps: int = 10,
    rounds: int = 3,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    mace_max_atoms: int = 500,
) -> dict[str, dict[str, float]]:
    """Median MD step time (ms) per configuration and cubic-cell repeat; also ratios.

    Args:
        sizes: repeats of the 4-atom cubic Cu cell (3 -> 108 atoms, 10 -> 4000 atoms).
        k: committee size.
        steps: MD steps timed per round.
        rounds: interleaved rounds.
        device: torch device.
        dtype: model dtype.
        mace_max_atoms: MACE is timed only up to this size (a K=4 MACE loop on 4000 atoms
            takes minutes per round on 2 CPU cores).
    """
    results: dict[str, dict[str, float]] = {}
    for rep in sizes:
        atoms = _cu(rep)
        single = _model(1, atoms, device, dtype)
        stacked = _model(k, atoms, device, dtype)
        loop = LoopCommittee([stacked.select_members([i]) for i in range(k)])
        configs: dict[str, Callable[[], Calculator]] = {
            "single": lambda m=single: CommitteeCalculator(m, device=device),
            f"committee K={k} stacked": lambda m=stacked: CommitteeCalculator(m, device=device),
            f"committee K={k} loop": lambda m=loop: CommitteeCalculator(m, device=device),
        }
        mace = _mace_calculators(k, device) if len(atoms) <= mace_max_atoms else {}
        for name, calc in mace.items():
            configs[name] = lambda c=calc: c
        if not mace and len(atoms) <= mace_max_atoms:
            print("MACE: not measured (mace-torch not installed: pip install 'pesflow[mace]')")
        per: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(rounds):
            for name, make in configs.items():
                per[name].extend(_time_md(atoms, make(), steps))
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
        med = {name: statistics.median(v) * 1e3 for name, v in per.items()}
        results[f"{len(atoms)} atoms"] = {f"{n} ms": v for n, v in med.items()}
        print(
            f"\nMD step (ASE Langevin, {len(atoms)} Cu atoms, {device}, {str(dtype)[6:]}), median of {rounds}x{steps} steps"
        )
        print(f"{'configuration':<26}{'ms/step':>10}{'x its single':>14}")
        for name, v in med.items():
            base = med["MACE single"] if name.startswith("MACE") else med["single"]
            ratio = v / base
            if not name.endswith("single"):
                results[f"{len(atoms)} atoms"][f"{name} ratio"] = ratio
            print(f"{name:<26}{v:>10.2f}{ratio:>14.2f}")
    return results


def bench_lammps_md(
    sizes: tuple[int, ...] = (3, 5),
    k: int = 4,
    steps: int = 20,
    rounds: int = 3,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, float]]:
    """NVE step time (ms, median over interleaved rounds) of LAMMPS (``fix external`` callback)
    vs ASE ``VelocityVerlet`` with the same K-member committee calculator, and their ratio.

    Args:
        sizes: repeats of the 4-atom cubic Cu cell (3 -> 108 atoms, 5 -> 500 atoms).
        k: committee size. steps: NVE steps per round (after a warm-up). rounds: rounds.
        device: torch device. dtype: model dtype.
    """
    from mlip_core.lammps import run_lammps_md

    results: dict[str, dict[str, float]] = {}
    for rep in sizes:
        atoms = _cu(rep)
        thermalize_momenta(atoms, 300, rng=np.random.default_rng(0))
        calc = CommitteeCalculator(_model(k, atoms, device, dtype), device=device)
        per: dict[str, list[float]] = {"ASE VelocityVerlet": [], "LAMMPS fix external": []}
        for _ in range(rounds):
            a = atoms.copy()
            a.calc = calc
            dyn = VelocityVerlet(a, 1.0 * units.fs)
            dyn.run(2)  # warm-up
            t0 = time.perf_counter()
            dyn.run(steps)
            per["ASE VelocityVerlet"].append((time.perf_counter() - t0) / steps)
            res = run_lammps_md(atoms, calc, steps=steps, record_every=steps, thermo_every=steps)
            # per force evaluation: LAMMPS also evaluates step 0 (ASE's warm-up did it)
            per["LAMMPS fix external"].append(res.wall_time_s / res.extra["n_callbacks"])
        med = {name: statistics.median(v) * 1e3 for name, v in per.items()}
        ratio = med["LAMMPS fix external"] / med["ASE VelocityVerlet"]
        results[f"{len(atoms)} atoms"] = {**{f"{n} ms": v for n, v in med.items()}, "ratio": ratio}
        print(
            f"\nNVE step ({len(atoms)} Cu atoms, K={k} committee, {device}, {str(dtype)[6:]}),"
            f" median of {rounds} rounds x {steps} steps"
        )
        print(f"{'integrator':<26}{'ms/step':>10}{'x ASE':>10}")
        for name, v in med.items():
            print(f"{name:<26}{v:>10.2f}{v / med['ASE VelocityVerlet']:>10.2f}")
    return results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m benchmarks.mlip_core [--device cuda] [--json out.json]``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.mlip_core", description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 10])
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--float64", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--lammps", action="store_true", help="LAMMPS vs ASE NVE instead")
    a = p.parse_args(argv)
    dtype = torch.float64 if a.float64 else torch.float32
    if a.lammps:
        sizes = (3, 5) if a.sizes == [3, 10] else tuple(a.sizes)
        res = bench_lammps_md(sizes, a.k, max(a.steps, 20), a.rounds, a.device, dtype)
    else:
        res = bench_md(
            tuple(a.sizes),
            a.k,
            a.steps,
            a.rounds,
            a.device,
            dtype,
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
