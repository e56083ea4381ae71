"""Pre-flight checks run before any code starts: geometry sanity.

Element support (pseudopotentials, basis sets) and executables are checked by each backend's
``check_inputs`` hook; the base class runs all checks and returns a typed failure value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from structure_checks import cell_problem, neighbor_box

__all__ = ["PreflightLimits", "check_geometry"]


@dataclass(frozen=True)
class PreflightLimits:
    """Thresholds for :func:`check_geometry`.

    ``min_distance`` (Å) applies to every pair, periodic images included;
    volumes per atom (Å^3) apply to cells periodic in all three directions.
    """

    min_distance: float = 0.5
    min_volume_per_atom: float = 1.0
    max_volume_per_atom: float = 10_000.0


def check_geometry(atoms: Atoms, limits: PreflightLimits | None = None) -> str | None:
    """Return a message naming the problem, or ``None`` when the geometry is sane."""
    limits = limits or PreflightLimits()
    n = len(atoms)
    if n == 0:
        return "structure has no atoms"
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        bad = np.unique(np.nonzero(~np.isfinite(pos))[0]).tolist()
        return f"non-finite positions for atom indices {bad}"
    pbc = atoms.pbc
    cell = atoms.cell.array
    problem = cell_problem(cell, pbc)
    if problem is not None:
        return problem
    if pbc.all():
        volume = abs(float(np.linalg.det(cell)))
        per_atom = volume / n
        if not limits.min_volume_per_atom <= per_atom <= limits.max_volume_per_atom:
            return (
                f"cell volume {volume:.4g} Å^3 = {per_atom:.4g} Å^3/atom is outside "
                f"[{limits.min_volume_per_atom}, {limits.max_volume_per_atom}] Å^3/atom"
            )
    if limits.min_distance > 0:
        probe = atoms.copy()
        if not pbc.all():
            # the neighbour list needs a box around the non-periodic directions
            probe.set_cell(neighbor_box(cell, pbc), scale_atoms=False)
        i, j, d = neighbor_list("ijd", probe, limits.min_distance, self_interaction=False)
        if len(d):
            k = int(np.argmin(d))
            a, b = int(i[k]), int(j[k])
            what = "its own periodic image" if a == b else f"atom {b} ({atoms[b].symbol})"
            return (
                f"atoms too close: atom {a} ({atoms[a].symbol}) is {d[k]:.3f} Å from {what}; "
                f"minimum allowed distance is {limits.min_distance} Å"
            )
    return None
