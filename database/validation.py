"""Input checks: every function raises :class:`DatabaseInputError` naming the problem."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from structure_checks import cell_problem
from structure_checks.state import StateError, physical_state

from .errors import DatabaseInputError
from .vocabulary import FAILURE_KINDS


def check_atoms(atoms, what: str = "structure") -> None:
    """Check an ``ase.Atoms``-like object: (N,3) finite positions, (3,3) finite cell whose
    periodic vectors are non-zero and independent (:func:`structure_checks.cell_problem`)."""
    try:
        numbers = np.asarray(atoms.numbers)
        positions = np.asarray(atoms.positions)
        cell = np.asarray(atoms.cell.array if hasattr(atoms.cell, "array") else atoms.cell)
        pbc = np.asarray(atoms.pbc)
    except AttributeError as exc:
        raise DatabaseInputError(
            f"{what}: expected an ase.Atoms, got {type(atoms).__name__}"
        ) from exc
    n = len(numbers)
    if n == 0:
        raise DatabaseInputError(f"{what}: has no atoms")
    if positions.shape != (n, 3):
        raise DatabaseInputError(
            f"{what}: positions have shape {positions.shape}, expected ({n}, 3)"
        )
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.argwhere(~np.isfinite(positions))[:, 0]).tolist()
        raise DatabaseInputError(f"{what}: non-finite positions at atom indices {bad}")
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise DatabaseInputError(f"{what}: cell must be a finite 3x3 matrix")
    if pbc.shape != (3,):
        raise DatabaseInputError(f"{what}: pbc must have 3 flags")
    problem = cell_problem(cell, pbc)
    if problem is not None:
        raise DatabaseInputError(f"{what}: {problem}")
    if np.any(numbers <= 0) or np.any(numbers > 118):
        raise DatabaseInputError(f"{what}: invalid atomic numbers {sorted(set(numbers.tolist()))}")
    try:
        physical_state(atoms)
    except StateError as exc:
        raise DatabaseInputError(f"{what}: {exc}") from exc


def check_energy(energy: Any, what: str = "energy") -> float:
    """A finite float energy (eV)."""
    if energy is None:
        raise DatabaseInputError(f"{what}: missing")
    try:
        value = float(energy)
    except (TypeError, ValueError) as exc:
        raise DatabaseInputError(f"{what}: not a number: {energy!r}") from exc
    if not math.isfinite(value):
        raise DatabaseInputError(f"{what}: not finite ({value})")
    return value


def check_forces(forces: Any, natoms: int, what: str = "forces") -> np.ndarray:
    """Finite float64 (natoms, 3) forces (eV/Å)."""
    if forces is None:
        raise DatabaseInputError(f"{what}: missing (a label result must contain forces)")
    arr = np.asarray(forces, dtype=np.float64)
    if arr.shape != (natoms, 3):
        raise DatabaseInputError(f"{what}: shape {arr.shape}, expected ({natoms}, 3)")
    if not np.all(np.isfinite(arr)):
        bad = np.unique(np.argwhere(~np.isfinite(arr))[:, 0]).tolist()
        raise DatabaseInputError(f"{what}: non-finite values at atom indices {bad}")
    return arr


def check_stress(stress: Any, what: str = "stress") -> np.ndarray | None:
    """Finite stress as Voigt (6,) eV/Å^3 (xx yy zz yz xz xy); a 3x3 tensor is converted."""
    if stress is None:
        return None
    arr = np.asarray(stress, dtype=np.float64)
    if arr.shape == (3, 3):
        arr = np.array([arr[0, 0], arr[1, 1], arr[2, 2], arr[1, 2], arr[0, 2], arr[0, 1]])
    if arr.shape != (6,):
        raise DatabaseInputError(f"{what}: shape {arr.shape}, expected (6,) Voigt or (3, 3)")
    if not np.all(np.isfinite(arr)):
        raise DatabaseInputError(f"{what}: non-finite values")
    return arr


def check_failure_kind(kind: str) -> str:
    """One of :data:`structure_checks.vocabulary.FAILURE_KINDS`."""
    if kind not in FAILURE_KINDS:
        raise DatabaseInputError(f"failure kind {kind!r} unknown; expected one of {FAILURE_KINDS}")
    return kind


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise DatabaseInputError(f"{what} {value!r} unknown; expected one of {choices}")
    return value


def check_json(value: Any, what: str) -> Any:
    """A JSON-serialisable value (dicts of plain types); returns a normalised copy."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DatabaseInputError(f"{what}: not JSON-serialisable ({exc})") from exc


def check_nonempty(value: str, what: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise DatabaseInputError(f"{what}: must be a non-empty string")
    return value


LABEL_TOLERANCES = {"energy": 1e-6, "forces": 1e-5, "stress": 1e-7}
"""Absolute tolerances under which two labels of one structure are the same label (eV, eV/Å,
eV/Å^3; files keep forces to 8 decimals, energies in full)."""


def label_mismatch(a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]) -> str | None:
    """How two labels ``(energy, forces, stress-or-None)`` of one structure disagree beyond
    :data:`LABEL_TOLERANCES`, or ``None`` when they are the same label (a missing stress is
    not a disagreement)."""
    de = abs(float(a[0]) - float(b[0]))
    if de > LABEL_TOLERANCES["energy"]:
        return f"energy {float(a[0]):.8g} vs {float(b[0]):.8g} eV"
    df = float(np.max(np.abs(np.asarray(a[1], float) - np.asarray(b[1], float)), initial=0.0))
    if df > LABEL_TOLERANCES["forces"]:
        return f"forces differ by up to {df:.3g} eV/Å"
    if a[2] is not None and b[2] is not None:
        ds = float(np.max(np.abs(np.asarray(a[2], float) - np.asarray(b[2], float))))
        if ds > LABEL_TOLERANCES["stress"]:
            return f"stress differs by up to {ds:.3g} eV/Å^3"
    return None
