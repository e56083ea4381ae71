"""Geometry sanity of a frame before it is labelled: finite coordinates, no two atoms (periodic
images included) closer than a species-aware limit, and for periodic cells a lattice — judged on
its Niggli-reduced cell, never its representation — with a sane volume per atom.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii
from vesin import NeighborList

__all__ = ["GeometryProblem", "check_geometry", "min_interatomic_distance"]


def min_interatomic_distance(atoms: Atoms, cutoff: float = 3.0) -> tuple[float, int, int] | None:
    """Shortest distance between two atoms (periodic images included) below ``cutoff``.

    Returns ``(distance, i, j)`` or ``None`` if no pair is closer than ``cutoff``. An atom
    close to its own periodic image gives ``i == j``.
    """
    if len(atoms) == 0:
        return None
    nl = NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, d = nl.compute(
        points=np.asarray(atoms.positions, dtype=np.float64),
        box=np.asarray(atoms.cell[:], dtype=np.float64),
        periodic=np.asarray(atoms.pbc, dtype=bool),
        quantities="ijd",
    )
    if d.size == 0:
        return None
    k = int(np.argmin(d))
    return float(d[k]), int(i[k]), int(j[k])


class GeometryProblem(str):
    """One problem :func:`check_geometry` found: the message (a ``str``) and ``reason``, its
    stable category for counting dropped frames (``atoms too close``, ``volume per atom too
    small`` ...)."""

    reason: str

    def __new__(cls, reason: str, message: str) -> GeometryProblem:
        self = super().__new__(cls, message)
        self.reason = reason
        return self


def check_geometry(
    atoms: Atoms,
    *,
    min_distance: float = 0.5,
    covalent_factor: float | None = 0.5,
    max_cell_skew_deg: float = 60.0,
    min_volume_per_atom: float = 2.0,
    max_volume_per_atom: float = 200.0,
) -> list[GeometryProblem]:
    """Sanity problems that make a frame unfit for labelling; an empty list means fine.

    The lattice is judged, never its representation: a strongly tilted cell of a valid
    lattice (an NPT cell sheared over many steps, a non-reduced cell from a file) is the same
    crystal and passes.

    Checks:
        - NaN/inf positions or cell (reported alone: nothing else can be measured);
        - atoms too close (periodic images included): a pair ``i, j`` closer than
          ``max(min_distance, covalent_factor * (r_cov(Z_i) + r_cov(Z_j)))`` Å
          (ASE covalent radii; ``covalent_factor=None`` uses only ``min_distance``); a
          collapsed lattice shows here, as an atom close to its own image;
        - for fully periodic cells: an angle of the Niggli-reduced cell further than
          ``max_cell_skew_deg`` from 90° (reduced-cell angles lie in [60°, 120°] for every
          lattice — Křivý & Gruber, Acta Cryst. A32, 297 (1976) — so the default flags only a
          lattice too flat to reduce; a smaller value flags sheared lattices), and volume per
          atom outside ``[min_volume_per_atom, max_volume_per_atom]`` Å^3.

    Each problem is a :class:`GeometryProblem` (a ``str`` with a ``reason``).
    """
    problems: list[GeometryProblem] = []
    pos = np.asarray(atoms.positions, dtype=np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
    if bad.size:
        return [
            GeometryProblem("non-finite", f"non-finite positions for atoms {bad[:10].tolist()}")
        ]
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if not np.all(np.isfinite(cell)):
        return [GeometryProblem("non-finite", "non-finite cell")]
    if len(atoms) == 0:
        return [GeometryProblem("no atoms", "structure has no atoms")]

    periodic = bool(np.all(atoms.pbc))
    if periodic:
        volume = abs(float(np.linalg.det(cell)))
        if volume < 1e-8:
            return [GeometryProblem("zero volume", "periodic cell has zero volume")]
        try:
            reduced, _ = atoms.cell.niggli_reduce()
            angles = reduced.angles()
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            problems.append(GeometryProblem("lattice not reducible", f"lattice: {exc}"))
            angles = ()
        for name, ang in zip(("alpha", "beta", "gamma"), angles, strict=False):
            if abs(ang - 90.0) > max_cell_skew_deg:
                problems.append(
                    GeometryProblem(
                        "lattice too sheared",
                        f"Niggli-reduced cell angle {name} = {ang:.1f} deg is more than "
                        f"{max_cell_skew_deg:g} deg from 90",
                    )
                )
        vpa = volume / len(atoms)
        if vpa < min_volume_per_atom:
            problems.append(
                GeometryProblem(
                    "volume per atom too small",
                    f"volume per atom {vpa:.2f} Å^3 below min_volume_per_atom="
                    f"{min_volume_per_atom:g}",
                )
            )
        elif vpa > max_volume_per_atom:
            problems.append(
                GeometryProblem(
                    "volume per atom too large",
                    f"volume per atom {vpa:.2f} Å^3 above max_volume_per_atom="
                    f"{max_volume_per_atom:g}",
                )
            )

    z = np.asarray(atoms.numbers)
    r_cov = covalent_radii[z]
    reach = 2.0 * float(r_cov.max()) * (covalent_factor or 0.0)
    cutoff = max(min_distance, reach)
    if cutoff > 0:
        nl = NeighborList(cutoff=cutoff, full_list=False)
        i, j, d = nl.compute(pos, cell, np.asarray(atoms.pbc, dtype=bool), "ijd")
        i = i.astype(np.intp)
        j = j.astype(np.intp)
        limit = np.full(d.shape, float(min_distance))
        if covalent_factor is not None:
            limit = np.maximum(limit, covalent_factor * (r_cov[i] + r_cov[j]))
        close = np.flatnonzero(d < limit)
        if close.size:
            worst = close[np.argsort(d[close] / limit[close])][:5]
            pairs = ", ".join(
                f"{i[k]}-{j[k]} ({chemical_symbols[z[i[k]]]}-{chemical_symbols[z[j[k]]]}) "
                f"{d[k]:.3f} < {limit[k]:.3f} Å"
                for k in worst
            )
            problems.append(
                GeometryProblem(
                    "atoms too close", f"atoms too close: {close.size} pair(s), closest: {pairs}"
                )
            )
    return problems
