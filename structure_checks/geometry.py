"""The geometry rule, once: is a structure fit to be computed?

:func:`geometry_problems` returns every problem it finds as a :class:`GeometryProblem` (a
``str`` message with a stable ``reason`` for counting); an empty list means fit. The labelers'
pre-flight (:func:`dft_adapters.check_geometry`), the select step's filter and config
validation (:mod:`workflows`) call it with their own limits. :func:`min_interatomic_distance`
is the closest pair (the walkers' distance guard).

Checks:
    - at least one atom; finite positions (reported alone: nothing else can be measured);
    - the cell rule (:func:`structure_checks.cell_problem`: periodic vectors finite, non-zero,
      independent);
    - fully periodic cells: an angle of the Niggli-reduced cell further than
      ``max_cell_skew_deg`` from 90° (reduced-cell angles lie in [60°, 120°] for every lattice,
      Křivý & Gruber, Acta Cryst. A32, 297 (1976): the lattice is judged, never its
      representation), and the volume per atom within ``[min_volume_per_atom,
      max_volume_per_atom]`` Å^3;
    - atoms too close, periodic images included: a pair ``i, j`` closer than
      ``max(min_distance, covalent_factor * (r_cov(Z_i) + r_cov(Z_j)))`` Å (ASE's covalent
      radii; ``covalent_factor=None`` uses ``min_distance`` alone). A collapsed lattice shows
      here, as an atom close to its own image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import cell_problem, neighbor_box

__all__ = ["GeometryProblem", "geometry_problems", "min_interatomic_distance"]


class GeometryProblem(str):
    """One problem: the message (a ``str``) and ``reason``, its stable category (``atoms too
    close``, ``volume per atom too small``, ``non-finite``, ``degenerate cell`` ...)."""

    reason: str

    def __new__(cls, reason: str, message: str) -> GeometryProblem:
        self = super().__new__(cls, message)
        self.reason = reason
        return self


def _pairs(atoms: Any, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half neighbor list ``(i, j, d)`` below ``cutoff`` Å (vesin), images included; a zero
    non-periodic vector is completed to a box first (:func:`structure_checks.neighbor_box`)."""
    from vesin import NeighborList

    box = neighbor_box(np.asarray(atoms.cell[:], dtype=np.float64), atoms.pbc)
    nl = NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, d = nl.compute(
        points=np.asarray(atoms.positions, dtype=np.float64),
        box=box,
        periodic=np.asarray(atoms.pbc, dtype=bool),
        quantities="ijd",
    )
    return i.astype(np.intp), j.astype(np.intp), np.asarray(d, dtype=np.float64)


def min_interatomic_distance(atoms: Any, cutoff: float = 3.0) -> tuple[float, int, int] | None:
    """Shortest distance (Å) between two atoms (periodic images included) below ``cutoff``:
    ``(distance, i, j)``, ``i == j`` for an atom close to its own image; ``None`` if none."""
    if len(atoms) == 0:
        return None
    i, j, d = _pairs(atoms, cutoff)
    if d.size == 0:
        return None
    k = int(np.argmin(d))
    return float(d[k]), int(i[k]), int(j[k])


def _lattice(
    atoms: Any, max_cell_skew_deg: float | None, vpa_range: tuple[float, float]
) -> list[GeometryProblem]:
    problems: list[GeometryProblem] = []
    volume = abs(float(np.linalg.det(np.asarray(atoms.cell[:], dtype=np.float64))))
    if max_cell_skew_deg is not None:
        try:
            angles = atoms.cell.niggli_reduce()[0].angles()
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
    lo, hi = vpa_range
    if vpa < lo:
        problems.append(
            GeometryProblem(
                "volume per atom too small",
                f"volume per atom {vpa:.2f} Å^3 below min_volume_per_atom={lo:g}",
            )
        )
    elif vpa > hi:
        problems.append(
            GeometryProblem(
                "volume per atom too large",
                f"volume per atom {vpa:.2f} Å^3 above max_volume_per_atom={hi:g}",
            )
        )
    return problems


def geometry_problems(
    atoms: Any,
    *,
    min_distance: float = 0.5,
    covalent_factor: float | None = 0.5,
    max_cell_skew_deg: float | None = 60.0,
    min_volume_per_atom: float = 2.0,
    max_volume_per_atom: float = 200.0,
) -> list[GeometryProblem]:
    """Every problem of ``atoms`` (an ASE ``Atoms``) under these limits (see the module
    docstring; lengths Å, volumes Å^3 per atom); ``[]`` when it is fit."""
    from ase.data import chemical_symbols, covalent_radii

    if len(atoms) == 0:
        return [GeometryProblem("no atoms", "structure has no atoms")]
    pos = np.asarray(atoms.positions, dtype=np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
    if bad.size:
        return [
            GeometryProblem("non-finite", f"non-finite positions for atoms {bad[:10].tolist()}")
        ]
    cell_issue = cell_problem(atoms.cell[:], atoms.pbc)
    if cell_issue is not None:
        reason = "non-finite" if "NaN" in cell_issue else "degenerate cell"
        return [GeometryProblem(reason, cell_issue)]
    problems: list[GeometryProblem] = []
    if bool(np.all(atoms.pbc)):
        problems += _lattice(atoms, max_cell_skew_deg, (min_volume_per_atom, max_volume_per_atom))
    z = np.asarray(atoms.numbers)
    r_cov = covalent_radii[z]
    cutoff = max(min_distance, 2.0 * float(r_cov.max()) * (covalent_factor or 0.0))
    if cutoff <= 0:
        return problems
    i, j, d = _pairs(atoms, cutoff)
    limit = np.full(d.shape, float(min_distance))
    if covalent_factor is not None:
        limit = np.maximum(limit, covalent_factor * (r_cov[i] + r_cov[j]))
    close = np.flatnonzero(d < limit)
    if close.size:
        k = int(close[np.argmin(d[close] / limit[close])])
        a, b = int(i[k]), int(j[k])
        other = "its own periodic image" if a == b else f"atom {b} ({chemical_symbols[z[b]]})"
        problems.append(
            GeometryProblem(
                "atoms too close",
                f"atoms too close: {close.size} pair(s); closest: atom {a} "
                f"({chemical_symbols[z[a]]}) is {d[k]:.3f} Å from {other} "
                f"(minimum allowed {limit[k]:.3f} Å)",
            )
        )
    return problems
