"""Checks on structures before a model (or a DFT code) sees them.

Every failure is a :class:`StructureError` (a ``ValueError``) whose message names the problem:
the element, the atom indices, the distance.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from mlip_core.neighbors import neighbor_pairs
from structure_checks import cell_problem

__all__ = ["StructureError", "check_structure", "min_distance_pair"]


class StructureError(ValueError):
    """A structure the model cannot or must not evaluate."""


def min_distance_pair(atoms: Atoms, below: float) -> tuple[int, int, float] | None:
    """Closest pair of atoms (periodic images included) if closer than ``below`` Å, else None."""
    if len(atoms) < 1 or below <= 0:
        return None
    i, j, _, d = neighbor_pairs(atoms, below)
    if d.size == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def check_structure(
    atoms: Atoms,
    species: Iterable[int] | None = None,
    *,
    min_distance: float = 0.5,
) -> None:
    """Raise :class:`StructureError` unless ``atoms`` is safe to evaluate.

    Args:
        atoms: the structure.
        species: atomic numbers the model knows (None: any).
        min_distance: smallest allowed interatomic distance, Å (0 disables the check).

    Raises:
        StructureError: empty structure, non-finite positions or cell, unknown element,
            degenerate periodic cell, or two atoms closer than ``min_distance``.
    """
    if len(atoms) == 0:
        raise StructureError("empty structure: it has no atoms")
    pos = np.asarray(atoms.positions, dtype=float)
    bad = np.where(~np.isfinite(pos).all(axis=1))[0]
    if bad.size:
        raise StructureError(
            f"positions are NaN or infinite for atom(s) {bad[:10].tolist()}"
            + (" ..." if bad.size > 10 else "")
        )
    problem = cell_problem(atoms.cell.array, atoms.pbc)
    if problem is not None:
        raise StructureError(problem)
    if species is not None:
        known = set(int(z) for z in species)
        unknown = sorted(set(atoms.numbers.tolist()) - known)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            have = ", ".join(chemical_symbols[z] for z in sorted(known))
            raise StructureError(f"element(s) {names} not among the model's species ({have})")
    if (min_distance > 0 and len(atoms) > 1) or (min_distance > 0 and np.asarray(atoms.pbc).any()):
        close = min_distance_pair(atoms, min_distance)
        if close is not None:
            i, j, d = close
            raise StructureError(
                f"atoms {i} and {j} are {d:.3f} Å apart, closer than the minimum {min_distance} Å"
            )
