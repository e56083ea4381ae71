"""Committee uncertainty metrics.

The one definition of the per-atom force deviation used everywhere in pesflow
(DP-GEN's ``max_devi_f``: population standard deviation over committee members):

    sigma_i = sqrt( mean_k |F_i^(k) - <F_i>|^2 ),      uncertainty = max_i sigma_i

The relative variant divides by the magnitude of the mean force plus ``eps`` so that
atoms under large forces are not flagged only for being under large forces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "atomic_force_deviation",
    "energy_deviation",
    "max_force_deviation",
]


def _as_member_forces(forces: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(forces, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"committee forces must have shape (K members, N atoms, 3), got {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise ValueError(f"a committee needs at least 2 members to measure deviation, got {arr.shape[0]}")
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
