"""Pre-flight checks run before any code starts: geometry sanity.

Element support (pseudopotentials, basis sets) and executables are checked by each backend's
``check_inputs`` hook; the base class runs all checks and returns a typed failure value.
"""

from __future__ import annotations

from dataclasses import dataclass

from ase import Atoms

from structure_checks.geometry import geometry_problems

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
    """The first problem :func:`structure_checks.geometry.geometry_problems` finds under the
    labelers' limits (``min_distance`` alone, no covalent radii or lattice-shape rule: a code
    computes any lattice), or ``None`` when the geometry is sane."""
    limits = limits or PreflightLimits()
    problems = geometry_problems(
        atoms,
        min_distance=limits.min_distance,
        covalent_factor=None,
        max_cell_skew_deg=None,
        min_volume_per_atom=limits.min_volume_per_atom,
        max_volume_per_atom=limits.max_volume_per_atom,
    )
    return str(problems[0]) if problems else None
