"""One potential against issue 16's targets, on the benchmark's held-out test set.

``python -m benchmarks.al_efficiency --score CHECKPOINT [CONFIG]`` (e.g. the committee of
``make demo-full``): per test regime (oracle-driven MD of bulk at several temperatures, a melt,
a vacancy, strained cells, a surface; never trained on), the committee mean's force RMSE against
the target, how often the checkpoint's stored pooled 90 % bound held (the campaign's regime names
are not the test set's, so its per-regime bounds do not apply), and against the
oracle: C11 / C12 / C44, the energy of pushing one atom to 1.4 Å from its neighbour, and the
closest approach of two atoms in 2 ps of 2500 K Langevin MD.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["closest_approach", "push_energy", "score_checkpoint"]


def push_energy(calc: Any, element: str, crystal: str, a: float, distance: float = 1.4) -> float:
    """Energy (eV) of moving atom 0 of the 3x3x3 cubic cell towards its nearest neighbour
    until they are ``distance`` Å apart, the rest fixed."""
    from ase.build import bulk

    cell = bulk(element, crystal, a=a, cubic=True).repeat(3)
    d = cell.get_distances(0, range(1, len(cell)), mic=True, vector=True)
    j = int(np.argmin(np.linalg.norm(d, axis=1)))
    bond = d[j] / np.linalg.norm(d[j])
    moved = cell.copy()
    moved.positions[0] += bond * (np.linalg.norm(d[j]) - distance)
    energies = []
    for atoms in (cell, moved):
        atoms.calc = calc
        energies.append(float(atoms.get_potential_energy()))
    return energies[1] - energies[0]


def closest_approach(
    calc: Any,
    element: str,
    crystal: str,
    a: float,
    temperature: float = 2500.0,
    steps: int = 1000,
    seed: int = 0,
) -> float:
    """Smallest interatomic distance (Å) seen every 5 steps of Langevin MD (2 fs steps,
    friction 0.02 /fs) of the 3x3x3 cubic cell at ``temperature`` K (NaN if the MD fails)."""
    from ase import units
    from ase.build import bulk
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    atoms = bulk(element, crystal, a=a, cubic=True).repeat(3)
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng
    )
    closest = math.inf
    try:
        for _ in range(steps // 5):
            dyn.run(5)
            d = atoms.get_all_distances(mic=True)
            closest = min(closest, float(d[np.triu_indices(len(atoms), 1)].min()))
    except Exception:  # a potential that lets atoms fuse can fail anywhere in the MD
        return float("nan")
    return closest


def score_checkpoint(path: str, bench: Any, campaign: Any, test: list[Any] | None = None) -> dict:
    """The report of :mod:`this module <benchmarks.al_efficiency.score>` for a checkpoint."""
    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.calibration import RegimeCalibration, coverage_report
    from mlip_core.checkpoint import load_committee
    from workflows.steps import make_labeler

    from .properties import cubic_elastic_constants, equation_of_state
    from .testset import build_test_set, evaluate, oracle_calculator

    model, meta = load_committee(path)
    m = bench.material
    if test is None:
        test = build_test_set(bench, campaign, seed=1000, n_frames=bench.test_set.frames)
    ev = evaluate(model, test)
    target = bench.target_force_rmse
    out: dict[str, Any] = {
        "checkpoint": str(path),
        "target_force_rmse": target,
        "per_regime": ev["per_regime"],
        "worst_regime": max(ev["per_regime"], key=lambda k: ev["per_regime"][k]["force_rmse"]),
        "all_regimes_within_target": all(
            v["force_rmse"] <= target for v in ev["per_regime"].values()
        ),
    }
    cal = (meta.get("validation") or {}).get("calibration")
    if cal:  # the campaign's regime names are not the test set's: its pooled bound applies
        pooled = RegimeCalibration(pooled=RegimeCalibration.from_dict(cal).pooled)
        out["coverage_of_the_pooled_bound"] = coverage_report(
            pooled, ev["max_dev"], ev["max_err"], ev["regime"]
        )
    oracle = oracle_calculator(campaign, make_labeler(campaign))
    mine = CommitteeCalculator(model, min_distance=0.0)
    props: dict[str, dict[str, float]] = {}
    for name, calc in (("oracle", oracle), ("model", mine)):
        a0 = equation_of_state(calc, m.element, m.crystal, m.lattice_constant)["lattice_constant"]
        p = cubic_elastic_constants(calc, m.element, m.crystal, a0)
        p["push_1.4_A_eV"] = push_energy(calc, m.element, m.crystal, m.lattice_constant)
        p["closest_2500K_A"] = closest_approach(calc, m.element, m.crystal, m.lattice_constant)
        props[name] = p
    out["properties"] = props
    o, mm = props["oracle"], props["model"]
    out["targets"] = {
        "elastic_within_10pct": {
            k: 100 * abs(mm[k] - o[k]) / abs(o[k]) for k in ("C11_GPa", "C12_GPa", "C44_GPa")
        },
        "push_ratio_ge_0.7": mm["push_1.4_A_eV"] / o["push_1.4_A_eV"],
        "closest_approach_within_0.1_A_below": o["closest_2500K_A"] - mm["closest_2500K_A"],
    }
    return out


def score_lines(report: dict[str, Any]) -> list[str]:
    """The score as a few readable lines (meV/Å, GPa, eV, Å)."""
    t = report["target_force_rmse"] * 1e3
    lines = [f"{report['checkpoint']}: test force RMSE per regime (target <= {t:.0f} meV/Å)"]
    cover = report.get("coverage_of_the_pooled_bound", {})
    for name, v in report["per_regime"].items():
        c = cover.get(name, {}).get("covered")
        lines.append(
            f"  {name:14s} {v['force_rmse'] * 1e3:7.1f} meV/Å"
            + ("  ok" if v["force_rmse"] * 1e3 <= t else "  MISSED")
            + ("" if c is None else f"   the stored pooled 90 % bound covers {100 * c:.0f} %")
        )
    tg, p = report["targets"], report["properties"]
    lines.append(
        "  C11/C12/C44 off by "
        + ", ".join(f"{v:.1f} %" for v in tg["elastic_within_10pct"].values())
        + f" (model {p['model']['C11_GPa']:.0f}/{p['model']['C12_GPa']:.0f}/"
        f"{p['model']['C44_GPa']:.0f}, oracle {p['oracle']['C11_GPa']:.0f}/"
        f"{p['oracle']['C12_GPa']:.0f}/{p['oracle']['C44_GPa']:.0f} GPa; target <= 10 %)"
    )
    lines.append(
        f"  push to 1.4 Å: {p['model']['push_1.4_A_eV']:.2f} vs {p['oracle']['push_1.4_A_eV']:.2f}"
        f" eV = {tg['push_ratio_ge_0.7']:.2f} of the oracle (target >= 0.70)"
    )
    lines.append(
        f"  closest approach, 2 ps at 2500 K: {p['model']['closest_2500K_A']:.3f} vs "
        f"{p['oracle']['closest_2500K_A']:.3f} Å (target: at most 0.1 Å below)"
    )
    return lines
