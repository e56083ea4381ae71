"""CP2K main-output parsing: the layouts of the releases in use, as data (:data:`LAYOUTS`).

Each layout has a committed fixture in ``tests/dft_adapters/fixtures/cp2k``. Units: energy
Hartree -> eV, forces Hartree/Bohr -> eV/Å, stress GPa or bar (CP2K sign: pressure-positive)
-> ASE Voigt eV/Å^3 (xx yy zz yz xz xy, tension-positive).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase.units import Bohr, GPa, Hartree

from .results import UnknownLayoutError

__all__ = ["LAYOUTS", "CP2KLayout", "parse_cp2k_output"]

_NUM = r"[-+]?\d+\.\d*(?:[EeDd][-+]?\d+)?"


def cp2k_version(text: str) -> str | None:
    found = re.search(r"CP2K\| version string:\s+(.+)", text)
    return found.group(1).strip() if found else None


def _atomic_forces_block(text: str) -> np.ndarray | None:
    """``ATOMIC FORCES in [a.u.]`` table (CP2K ≤ 2024): ``# Atom Kind Element X Y Z`` rows
    ending at ``SUM OF ATOMIC FORCES``; the last such table of the run."""
    block = text.rsplit("ATOMIC FORCES in [a.u.]", 1)
    if len(block) != 2 or "SUM OF ATOMIC FORCES" not in block[1]:
        return None
    rows = re.findall(
        rf"^\s*\d+\s+\d+\s+[A-Za-z]+\s+({_NUM})\s+({_NUM})\s+({_NUM})\s*$",
        block[1].split("SUM OF ATOMIC FORCES", 1)[0],
        re.M,
    )
    return np.array(rows, dtype=float).reshape(-1, 3)


def _forces_rows(text: str) -> np.ndarray | None:
    """``FORCES| Atomic forces [hartree/bohr]`` rows (CP2K ≥ 2025): ``FORCES| <i> <fx> <fy>
    <fz> <|f|>`` ending at ``FORCES| Sum``; the last such block of the run."""
    block = text.rsplit("FORCES| Atomic forces [hartree/bohr]", 1)
    if len(block) != 2 or not re.search(r"^\s*FORCES\|\s+Sum\b", block[1], re.M):
        return None
    body = re.split(r"^\s*FORCES\|\s+Sum\b", block[1], maxsplit=1, flags=re.M)[0]
    rows = re.findall(
        rf"^\s*FORCES\|\s+\d+\s+({_NUM})\s+({_NUM})\s+({_NUM})\s+{_NUM}\s*$", body, re.M
    )
    return np.array(rows, dtype=float).reshape(-1, 3)


@dataclass(frozen=True)
class CP2KLayout:
    """One CP2K main-output layout: the energy line and the force table of a range of releases
    (each has a committed fixture in ``tests/dft_adapters/fixtures/cp2k``)."""

    releases: str
    energy: re.Pattern[str]
    forces: Callable[[str], np.ndarray | None]  # the table in Hartree/Bohr, or None


LAYOUTS: tuple[CP2KLayout, ...] = (
    CP2KLayout(
        "CP2K 2023.1 - 2024.x",
        re.compile(rf"ENERGY\| Total FORCE_EVAL \( \w+ \) energy \[a\.u\.\]:\s+({_NUM})"),
        _atomic_forces_block,
    ),
    CP2KLayout(
        "CP2K 2025.1 and later",
        re.compile(rf"ENERGY\| Total FORCE_EVAL \( \w+ \) energy \[hartree\]\s+({_NUM})"),
        _forces_rows,
    ),
)
"""The layouts :func:`parse_cp2k_output` reads; any other is an :class:`UnknownLayoutError`."""

_STRESS_UNITS = {"GPa": GPa, "bar": 1e-4 * GPa}


def _stress(text: str, version: str | None) -> np.ndarray | None:
    """The last ``STRESS| Analytical|Numerical stress tensor [GPa|bar]`` (CP2K sign:
    pressure-positive) as ASE Voigt eV/Å^3; ``None`` when the output has none."""
    heads = list(re.finditer(r"STRESS\| (?:Analytical|Numerical) stress tensor \[(\w+)\]", text))
    if not heads:
        return None
    unit = heads[-1].group(1)
    if unit not in _STRESS_UNITS:
        raise UnknownLayoutError(f"CP2K stress tensor in unit [{unit}]", version)
    rows = re.findall(
        rf"^\s*STRESS\|\s+([xyz])\s+({_NUM})\s+({_NUM})\s+({_NUM})\s*$",
        text[heads[-1].end() :],
        re.M,
    )[:3]
    if [r[0] for r in rows] != ["x", "y", "z"]:
        raise UnknownLayoutError("CP2K stress tensor without its x, y, z rows", version)
    s = -np.array([r[1:] for r in rows], dtype=float) * _STRESS_UNITS[unit]
    s = 0.5 * (s + s.T)
    return s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def parse_cp2k_output(text: str, natoms: int, *, stress: bool = False) -> dict[str, Any]:
    """Energy (eV), forces (eV/Å, shape ``(natoms, 3)``), stress (eV/Å^3, ASE Voigt, or
    ``None``), ``converged``, ``version``, ``complete`` and ``layout`` from CP2K's main output,
    in any of :data:`LAYOUTS` (energy Hartree -> eV, forces Hartree/Bohr -> eV/Å).

    Raises :class:`~dft_adapters.results.UnknownLayoutError` (naming the CP2K version of the
    output) when no known layout's energy line and force table are both there, when the table
    has another number of atoms than ``natoms``, or when ``stress`` is asked for and absent."""
    version = cp2k_version(text)
    for layout in LAYOUTS:
        energy = layout.energy.findall(text)
        forces = layout.forces(text) if energy else None
        if forces is not None:
            break
    else:
        raise UnknownLayoutError(
            "no known CP2K layout (energy line and force table of "
            + ", ".join(x.releases for x in LAYOUTS)
            + ")",
            version,
        )
    if forces.shape != (natoms, 3):
        raise UnknownLayoutError(
            f"CP2K force table has {forces.shape[0]} atoms, expected {natoms}", version
        )
    parsed_stress = _stress(text, version)
    if stress and parsed_stress is None:
        raise UnknownLayoutError("no 'STRESS| ... stress tensor' in the CP2K output", version)
    return {
        "energy": float(energy[-1].replace("D", "E")) * Hartree,
        "forces": forces * Hartree / Bohr,
        "stress": parsed_stress,
        "converged": "SCF run NOT converged" not in text,
        "version": version or "CP2K unknown",
        "complete": "PROGRAM ENDED AT" in text,
        "layout": layout.releases,
    }
