"""Reference datasets generated on the fly with ASE's EMT potential (no downloads).

Used by tests, benchmarks and the demo: MD snapshots of a bulk metal at several temperatures
and volumes, labelled with EMT energy, forces and stress under the REF_* keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from mlip_core.training import attach_labels

__all__ = ["emt_md_dataset", "label_with"]


def label_with(structures: Sequence[Atoms], calculator_factory=EMT) -> list[Atoms]:
    """Label structures with a fresh ASE calculator each (energy, forces, stress if periodic)."""
    out = []
    for at in structures:
        a = at.copy()
        a.calc = calculator_factory()
        stress = a.get_stress() if a.pbc.all() else None
        out.append(attach_labels(at, a.get_potential_energy(), a.get_forces(), stress))
    return out


def emt_md_dataset(
    n_structures: int = 100,
    *,
    element: str = "Cu",
    lattice_constant: float = 3.61,
    repeat: int = 3,
    temperatures: Sequence[float] = (300.0, 600.0, 900.0, 1200.0),
    volume_scales: Sequence[float] = (0.97, 1.0, 1.03),
    steps_between: int = 20,
    equilibration_steps: int = 40,
    timestep_fs: float = 4.0,
    seed: int = 0,
) -> list[Atoms]:
    """EMT-labelled snapshots from Langevin MD of a cubic fcc supercell.

    One trajectory per (temperature, volume) pair; snapshots every ``steps_between`` steps
    after ``equilibration_steps``, distributed round-robin until ``n_structures`` are collected.
    A 3x3x3 repeat of the cubic cell has 108 atoms.
    """
    rng = np.random.default_rng(seed)
    combos = [(t, v) for t in temperatures for v in volume_scales]
    per = int(np.ceil(n_structures / len(combos)))
    frames: list[list[Atoms]] = []
    for t, v in combos:
        atoms = bulk(element, "fcc", a=lattice_constant * v ** (1 / 3), cubic=True).repeat(repeat)
        atoms.calc = EMT()
        MaxwellBoltzmannDistribution(atoms, temperature_K=t, rng=rng)
        Stationary(atoms)
        dyn = Langevin(
            atoms, timestep_fs * units.fs, temperature_K=t, friction=0.02, rng=rng, fixcm=False
        )
        dyn.run(equilibration_steps)
        snaps = []
        for _ in range(per):
            dyn.run(steps_between)
            snaps.append(
                attach_labels(
                    atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
                )
            )
        frames.append(snaps)
    out: list[Atoms] = []
    for i in range(per):
        for snaps in frames:
            if len(out) < n_structures:
                s = snaps[i]
                s.info["config_type"] = "emt_md"
                out.append(s)
    return out
