"""Which keys of an imported frame carry its label, and the stress a frame states.

Files from the field's tools name the same quantities differently: ASE writes ``stress``
(Voigt or 3x3, eV/Å^3) or a calculator's results; DP-GEN, dpdata and GPUMD write ``virial``
(3x3 as 9 numbers, eV), MACE / NequIP datasets ``REF_stress`` / ``REF_virial``. A frame's
stress is taken from whichever it carries, converted with ``stress = -virial / V`` (ASE's sign:
positive is tensile; V the cell volume, Å^3), and a frame whose stress and virial disagree is
refused. A key that looks like a label (ends in energy, force(s), stress(es), virial(s)) but is
not one pesflow reads is refused too, naming it: dropping a label silently would train on less
than the file says.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .errors import DatabaseInputError

__all__ = ["VIRIAL_KEYS", "frame_stress", "unread_label_keys"]

VIRIAL_KEYS = ("REF_virial", "REF_virials", "virial", "virials")
"""``info`` keys read as a virial (eV, 3x3 or 9 numbers row-major; ``REF_`` forms first)."""

_LABEL_LIKE = re.compile(r"(energy|energies|forces?|stress(es)?|virials?)$", re.IGNORECASE)
_TOL = {"rtol": 1e-5, "atol": 1e-6}  # eV/Å^3: files keep ~8 significant digits


def _voigt(tensor: Any, where: str, key: str) -> np.ndarray:
    """Voigt (xx yy zz yz xz xy) of a stress given as 6 numbers, 9 numbers or 3x3."""
    a = np.asarray(tensor, dtype=np.float64).ravel()
    if a.size == 6:
        return a
    if a.size != 9:
        raise DatabaseInputError(f"{where}: {key}: expected 6 or 9 numbers, got {a.size}")
    m = a.reshape(3, 3)
    if not np.allclose(m, m.T, **_TOL):
        raise DatabaseInputError(f"{where}: {key}: not a symmetric tensor")
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def frame_stress(
    atoms: Any, results: dict[str, Any], stress_key: str, where: str
) -> np.ndarray | None:
    """The frame's stress (Voigt, eV/Å^3) from ``info[stress_key]``, a calculator's
    ``stress`` or a virial (:data:`VIRIAL_KEYS`; ``-virial / V``), or ``None``. Raises
    :class:`DatabaseInputError` when given values disagree, have the wrong size, or a virial
    comes with a cell without volume."""
    stated: list[tuple[str, np.ndarray]] = []
    if stress_key in atoms.info:
        stated.append((stress_key, _voigt(atoms.info[stress_key], where, stress_key)))
    elif results.get("stress") is not None:
        stated.append(("stress", _voigt(results["stress"], where, "stress")))
    for key in VIRIAL_KEYS:
        if key in atoms.info:
            volume = abs(atoms.cell.volume)
            if not atoms.pbc.all() or volume < 1e-6:
                raise DatabaseInputError(
                    f"{where}: {key}: a virial needs a periodic cell with volume (pbc "
                    f"{atoms.pbc.tolist()}, volume {volume:.3g} Å^3)"
                )
            stated.append((key, -_voigt(atoms.info[key], where, key) / volume))
    if not stated:
        return None
    first_key, first = stated[0]
    for key, other in stated[1:]:
        if not np.allclose(first, other, **_TOL):
            raise DatabaseInputError(
                f"{where}: {first_key} and {key} disagree (as stress, eV/Å^3: "
                f"{np.round(first, 8).tolist()} vs {np.round(other, 8).tolist()}; "
                "stress = -virial / volume)"
            )
    return first


def unread_label_keys(atoms: Any, read: set[str]) -> list[str]:
    """``info`` / ``arrays`` keys of ``atoms`` that look like labels and are not in ``read``
    (nor a virial key)."""
    keys = [*atoms.info, *(k for k in atoms.arrays if k not in ("numbers", "positions"))]
    return sorted(
        k for k in keys if _LABEL_LIKE.search(k) and k not in read and k not in VIRIAL_KEYS
    )
