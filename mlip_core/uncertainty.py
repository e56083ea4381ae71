"""Committee uncertainty metrics.

The one definition of the per-atom force deviation used everywhere in pesflow
(DP-GEN's ``max_devi_f``: population standard deviation over committee members):

    sigma_i = sqrt( mean_k |F_i^(k) - <F_i>|^2 ),      uncertainty = max_i sigma_i

The relative variant divides by the magnitude of the mean force plus ``eps`` so that
atoms under large forces are not flagged only for being under large forces.

Calibration (the map from a raw deviation to the expected error, per regime) lives in
:mod:`mlip_core.calibration`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

# pesflow-free (shipped by `pesflow export --format lammps`); defined there, one definition
from mlip_core.lammps_setup import MODEL_DEVI_COLUMNS, model_devi_row

__all__ = [
    "MODEL_DEVI_COLUMNS",
    "atomic_force_deviation",
    "energy_deviation",
    "frame_deviations",
    "max_devi_e",
    "max_devi_v",
    "max_force_deviation",
    "model_devi_row",
    "spearman",
]


def _as_member_forces(forces: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(forces, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"committee forces must have shape (K members, N atoms, 3), got {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise ValueError(
            f"a committee needs at least 2 members to measure deviation, got {arr.shape[0]}"
        )
    return arr


def atomic_force_deviation(
    forces: ArrayLike, *, relative: bool = False, eps: float = 1.0
) -> NDArray[np.float64]:
    """Per-atom force deviation ``sigma_i`` of a committee.

    Args:
        forces: member forces, shape ``(K, N, 3)`` in eV/Å.
        relative: divide by ``|<F_i>| + eps`` (dimensionless) instead of returning eV/Å.
        eps: regulariser of the relative variant, eV/Å.

    Returns:
        ``(N,)`` array: absolute deviation in eV/Å, or the relative deviation.
    """
    f = _as_member_forces(forces)
    mean = f.mean(axis=0)
    sigma = np.sqrt(((f - mean) ** 2).sum(axis=-1).mean(axis=0))
    if relative:
        if eps <= 0:
            raise ValueError(f"eps must be positive for the relative deviation, got {eps}")
        sigma = sigma / (np.linalg.norm(mean, axis=-1) + eps)
    return sigma


def max_force_deviation(forces: ArrayLike, *, relative: bool = False, eps: float = 1.0) -> float:
    """Max over atoms of :func:`atomic_force_deviation` (the frame's uncertainty)."""
    sigma = atomic_force_deviation(forces, relative=relative, eps=eps)
    if sigma.size == 0:
        raise ValueError("cannot measure the force deviation of a structure with no atoms")
    return float(sigma.max())


def energy_deviation(energies: ArrayLike) -> float:
    """Population standard deviation of the member energies, shape ``(K,)``, in eV."""
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    if e.size < 2:
        raise ValueError(f"a committee needs at least 2 members, got {e.size}")
    return float(e.std())


def max_devi_e(energies: ArrayLike, n_atoms: int) -> float:
    """Energy deviation per atom, eV/atom: population std over the members of E^(k)/N
    (DeePMD-kit's ``calc_model_devi_e`` on total energies per atom). ``energies`` ``(K,)`` eV."""
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be >= 1, got {n_atoms}")
    return energy_deviation(energies) / n_atoms


def max_devi_v(stresses: ArrayLike, volume: float, n_atoms: int) -> float:
    """Virial deviation per atom, eV/atom: the max over the 9 components of the population std
    over the members of the virial W = -sigma V divided by N (DeePMD-kit's
    ``calc_model_devi_v`` on virials per atom). ``stresses`` ``(K, 6)`` ASE Voigt eV/Å^3,
    ``volume`` Å^3."""
    from ase.stress import voigt_6_to_full_3x3_stress

    s = np.asarray(stresses, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 6 or s.shape[0] < 2:
        raise ValueError(f"member stresses must have shape (K >= 2, 6), got {s.shape}")
    if not volume > 0 or n_atoms < 1:
        raise ValueError(f"volume must be > 0 and n_atoms >= 1, got {volume}, {n_atoms}")
    virial = -voigt_6_to_full_3x3_stress(s).reshape(len(s), 9) * volume / n_atoms
    return float(virial.std(axis=0).max())


def frame_deviations(atoms: Any, results: Mapping[str, Any]) -> dict[str, float]:
    """``max_devi_e`` and ``max_devi_v`` (eV/atom) of a frame from a committee calculator's
    ``results`` (``energy_committee`` (K,), ``stress_committee`` (K, 6)); NaN where the
    calculator reports no member energies / stresses or the cell is not fully periodic."""
    n = len(atoms)
    e = results.get("energy_committee")
    st = results.get("stress_committee")
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.volume > 0
    return {
        "max_devi_e": max_devi_e(e, n) if e is not None else float("nan"),
        "max_devi_v": max_devi_v(st, atoms.cell.volume, n)
        if st is not None and periodic
        else float("nan"),
    }


# --------------------------------------------------------------------------------------
# Calibration: committee deviation -> expected max-atom force error
# --------------------------------------------------------------------------------------
#
# A committee's spread underestimates the true error (docs/decisions/0002-calibration.md).
# Once candidate frames are labelled their true max-atom force error is known, so the
# deviation -> error map can be fitted and stored with the model (checkpoint, database) to
# turn error tolerances into deviation thresholds.


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation of ``x`` and ``y`` (ties get average ranks).

    Returns NaN when either input is constant (the correlation is undefined there).
    Raises ``ValueError`` for mismatched lengths, fewer than 2 points or NaN values.
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.size != b.size:
        raise ValueError(f"spearman: x and y must have the same length, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"spearman: need at least 2 points, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("spearman: x and y must be finite (no NaN/inf)")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    ra = rankdata(a)
    rb = rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])
