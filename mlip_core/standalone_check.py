"""Checks that an exported standalone committee equals pesflow's own calculator.

:func:`probe_structures` derives from one periodic frame the three geometries the export is
checked on (the bulk itself, a slab periodic in x and y, a cluster without a cell);
:func:`relative_differences` is the metric (per result, ``max |a - b| / max |b|`` with ``b`` the
reference; the force deviations against the force scale); :func:`compare_calculators` runs both calculators on the structures and returns the
worst difference of each result. Tolerances: :data:`TOLERANCES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from ase import Atoms

__all__ = [
    "COMPARED",
    "FORCE_SCALED",
    "TOLERANCES",
    "compare_calculators",
    "probe_structures",
    "relative_differences",
]

TOLERANCES = {"float64": 1e-10, "float32": 1e-5}
"""Largest relative difference accepted between the export and pesflow, per precision."""
COMPARED = (
    "energy",
    "forces",
    "stress",
    "energy_committee",
    "forces_committee",
    "stress_committee",
    "forces_std",
    "max_force_dev",
)
"""The results compared (stress ones only on fully periodic structures)."""
FORCE_SCALED = ("forces_std", "max_force_dev")
"""Deviations, measured against the force scale: a spread of float32 member forces cannot be
more precise than the forces (a well-trained committee's spread is ~1 % of them)."""


def relative_differences(
    reference: Mapping[str, Any],
    candidate: Mapping[str, Any],
    keys: Iterable[str] = COMPARED,
    force_scaled: Iterable[str] = FORCE_SCALED,
) -> dict[str, float]:
    """``max |candidate - reference| / scale`` of every key of ``keys`` the reference has,
    ``scale = max |reference|`` (for ``force_scaled`` keys the larger of that and
    ``max |reference["forces_committee"]|``); 0 when both are zero, inf when only the
    reference is zero.

    Raises:
        KeyError: the candidate lacks a result the reference has.
        ValueError: shapes differ.
    """
    scaled = set(force_scaled)
    out = {}
    for key in keys:
        if key not in reference:
            continue
        ref = np.asarray(reference[key], dtype=np.float64)
        got = np.asarray(candidate[key], dtype=np.float64)
        if ref.shape != got.shape:
            raise ValueError(f"{key}: shape {got.shape} differs from the reference {ref.shape}")
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        if key in scaled and "forces_committee" in reference:
            scale = max(scale, float(np.abs(reference["forces_committee"]).max()))
        out[key] = 0.0 if diff == 0.0 else (diff / scale if scale > 0 else float("inf"))
    return out


def probe_structures(
    atoms: Atoms, vacuum: float = 6.0, cluster_size: int = 8, rattle: float = 0.02
) -> list[Atoms]:
    """``[bulk, slab, cluster]`` from a periodic frame: the frame rattled by ``rattle`` Å
    (seeded: no force or stress is zero by symmetry, where a relative difference means
    nothing); the same atoms periodic in x and y only, with ``vacuum`` Å along z; and its first
    ``cluster_size`` atoms as a molecule (no periodicity, zero cell)."""
    bulk = atoms.copy()
    bulk.calc = None
    if rattle > 0:
        bulk.rattle(rattle, seed=1)
    slab = bulk.copy()
    slab.wrap()
    slab.pbc = [True, True, False]
    slab.center(vacuum=vacuum, axis=2)
    cluster = bulk[: min(cluster_size, len(bulk))].copy()
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    return [bulk, slab, cluster]


def compare_calculators(
    reference: Any,
    candidate: Any,
    structures: Iterable[Atoms],
    force_scaled: Iterable[str] = FORCE_SCALED,
) -> dict[str, float]:
    """Worst :func:`relative_differences` of ``candidate`` against ``reference`` (two ASE
    calculators with pesflow's committee result names) over ``structures``."""
    worst: dict[str, float] = {}
    for atoms in structures:
        results = []
        for calc in (reference, candidate):
            calc.reset()
            calc.calculate(atoms.copy(), ["energy", "forces"])
            results.append(dict(calc.results))
        for key, value in relative_differences(*results, force_scaled=force_scaled).items():
            worst[key] = max(worst.get(key, 0.0), value)
    return worst
